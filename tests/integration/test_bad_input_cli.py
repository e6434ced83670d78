"""Bad input through the real command line: clear messages, right exit codes, no traceback, no secret."""
import json
import os
import subprocess
import sys
import uuid

import pymysql
import pytest

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-" + uuid.uuid4().hex[:8]


def eai(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "eai_ray.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


@pytest.fixture
def maria_user():
    user = f"eai_bad_{uuid.uuid4().hex[:6]}"
    db = f"eai_bad_{uuid.uuid4().hex[:6]}"
    con = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with con.cursor() as c:
        c.execute(f"CREATE DATABASE {db}")
        c.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(10))")
        c.execute(f"INSERT INTO {db}.t VALUES (1, 'a')")
        c.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'")
        c.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{SECRET}'")
        c.execute(f"GRANT SELECT ON {db}.* TO '{user}'@'%'")
        c.execute(f"GRANT SELECT ON {db}.* TO '{user}'@'localhost'")
    yield user, db
    with con.cursor() as c:
        c.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        c.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
        c.execute(f"DROP DATABASE IF EXISTS {db}")
    con.close()


def write_pipeline(tmp_path, user, db, port=3306):
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: bad
state_dir: {tmp_path / 'state'}
sources:
  - kind: mariadb
    name: m
    port: {port}
    database: {db}
    user: {user}
    password: ${{EAI_TEST_PW}}
    connect_timeout: 2
    tables: [{{name: t, primary_key: [id]}}]
""")
    return p


def test_right_password_works_wrong_one_is_clear_and_not_retried(tmp_path, maria_user):
    user, db = maria_user
    p = write_pipeline(tmp_path, user, db)
    ok = eai("run", str(p), "--local", "--json", env={"EAI_TEST_PW": SECRET})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["tables"][0]["inserted"] == 1
    bad = eai("run", str(p), "--local", "--json", env={"EAI_TEST_PW": SECRET + "x"})
    assert bad.returncode == 1
    rep = json.loads(bad.stdout)["tables"][0]
    assert rep["error"]["type"] == "AuthenticationFailed" and rep["retries"] == 0
    assert SECRET not in bad.stdout + bad.stderr and "Traceback" not in bad.stderr


def test_unreachable_database_is_transient_and_retried(tmp_path, maria_user):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    user, db = maria_user
    p = write_pipeline(tmp_path, user, db, port=closed)
    out = eai("run", str(p), "--local", "--json", env={"EAI_TEST_PW": SECRET})
    assert out.returncode == 1
    rep = json.loads(out.stdout)["tables"][0]
    assert rep["error"]["type"] == "SourceUnavailable" and rep["error"]["transient"] is True
    assert rep["retries"] >= 1 and SECRET not in out.stdout + out.stderr


def test_missing_secret_and_bad_config_exit_2_with_file_and_field(tmp_path, maria_user):
    user, db = maria_user
    p = write_pipeline(tmp_path, user, db)
    env = {k: v for k, v in os.environ.items() if k != "EAI_TEST_PW"}
    out = subprocess.run([sys.executable, "-m", "eai_ray.cli", "run", str(p), "--local"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode in (1, 2) and "EAI_TEST_PW" in (out.stderr + out.stdout)
    bad = tmp_path / "bad.yaml"
    bad.write_text(p.read_text().replace("connect_timeout: 2", "conect_timeout: 2"))
    out = eai("run", str(bad), "--local")
    assert out.returncode == 2
    assert str(bad) in out.stderr and "unknown key 'conect_timeout'" in out.stderr and "sources[0]" in out.stderr
    assert "Traceback" not in out.stderr
    out = eai("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "file not found" in out.stderr


def test_only_with_an_unknown_name_is_an_error_and_closed_pipes_are_quiet(tmp_path):
    import sqlite3

    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    con.executemany("INSERT INTO items VALUES (?)", [(i,) for i in range(20_000)])
    con.commit()
    con.close()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"name: p\nstate_dir: {tmp_path / 'state'}\n"
                        f"sources: [{{kind: sqlite, name: shop, path: {db}, tables: [items]}}]\n")
    out = eai("run", str(pipeline), "--local", "--only", "shop.itemz")
    assert out.returncode == 2 and "did you mean 'shop.items'" in out.stderr and "Traceback" not in out.stderr
    assert eai("run", str(pipeline), "--local", "--json").returncode == 0
    # far more than a pipe holds, read by a reader that stops after one byte
    piped = subprocess.run(f"{sys.executable} -m eai_ray.cli show silver.shop_items --limit 20000 --json "
                           f"-p {pipeline} | head -c 1", shell=True, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_validate_reports_every_problem_a_run_would_hit(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("""name: v
sources:
  - kind: postgres
    name: pg
    host: 127.0.0.1
    database: x
    user: postgres
    password: ${EAI_TEST_VALIDATE_UNSET}
    tables: [{name: orders, primary_key: [id]}]
silver:
  - name: orders
    source: pg.orders
    columns: {id: {type: int64}, amount: {type: "decimal(12,2)"}}
gold:
  - {name: g, sql: "SELECT SUM(amountt) AS s FROM silver.orders"}
""")
    env = {k: v for k, v in os.environ.items() if k != "EAI_TEST_VALIDATE_UNSET"}
    out = subprocess.run([sys.executable, "-m", "eai_ray.cli", "validate", str(p)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "2 problems" in out.stderr
    assert "sources[0].password: environment variable EAI_TEST_VALIDATE_UNSET is not set" in out.stderr
    assert "gold[0] (g).sql" in out.stderr and "amountt" in out.stderr
    ok = subprocess.run([sys.executable, "-m", "eai_ray.cli", "validate", str(p), "--json"], capture_output=True,
                        text=True, env={**env, "EAI_TEST_VALIDATE_UNSET": "pw"}, timeout=120)
    data = json.loads(ok.stdout)
    assert ok.returncode == 2 and data["valid"] is False and len(data["problems"]) == 1
