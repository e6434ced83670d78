"""PostgreSQL and MariaDB connectors against the real local services, 50k rows of many types.

Each module-scoped database is private (random suffix) and dropped at the end.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from eai_ray.config import MySQLSource, PostgresSource
from eai_ray.errors import AuthenticationFailed, SourceNotFound, SourceUnavailable
from eai_ray.ingestion.base import merge_checkpoints
from tests.integration.cases_db import MY, PG, free_port, my_admin, pg_admin, private_pg_database, suffix

N = 50_000
UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
LABELS = ["plain", "", "comma, and \"quotes\"", "new\nline", "ünïcødé ✓", "emoji 🚀", "NULL", "\\N", "t", " padded "]


def row(i: int) -> dict[str, Any]:
    """Deterministic values; every 97th row has NULLs in the nullable columns."""
    null = i % 97 == 0
    return {
        "id": i,
        "small": None if null else (i % 30000) - 15000,
        "amount": None if null else Decimal(i * 37 % 1_000_000_007) / Decimal(1_000_000) - Decimal(500),
        "ratio": None if null else i / 7,
        "ok": None if null else i % 3 == 0,
        "day": None if null else dt.date(2000, 1, 1) + dt.timedelta(days=i % 9000),
        "ts": None if null else dt.datetime(2020, 1, 1) + dt.timedelta(seconds=i * 61, microseconds=i % 1000),
        # updated_at repeats every 3 rows: batches must not split a cursor value
        "updated_at": T0 + dt.timedelta(seconds=i // 3, microseconds=(i // 3) % 7),
        "label": None if null else LABELS[i % len(LABELS)] + f" #{i}",
        "raw": None if null else i.to_bytes(4, "big") + b"\x00\xff",
    }


ROWS = [row(i) for i in range(1, N + 1)]


def read_table(conn, resource: str, **kw) -> tuple[pa.Table, dict | None, int]:
    batches = list(conn.read(resource, **kw))
    ckpt = None
    for b in batches:
        ckpt = merge_checkpoints(ckpt, b.checkpoint)
    tables = [b.table for b in batches]
    table = pa.concat_tables(tables) if tables else None
    return table, ckpt, len(batches)


def by_id(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def assert_no_leak(exc: BaseException, *secrets: str) -> None:
    text = str(exc) + json.dumps(getattr(exc, "to_dict", lambda: {})())
    for s in secrets:
        assert s not in text


# ====================================================================== PostgreSQL
@pytest.fixture(scope="module")
def pg_db():
    from psycopg2.extras import execute_values

    def setup(cur):
        cur.execute("""CREATE TABLE wide (
            id bigint PRIMARY KEY, small int2, amount numeric(18,6), ratio float8, ok bool, day date,
            ts timestamp, updated_at timestamptz NOT NULL, label text, raw bytea,
            uid uuid, doc jsonb, tags text[], big numeric)""")
        execute_values(cur, "INSERT INTO wide VALUES %s", [
            (r["id"], r["small"], r["amount"], r["ratio"], r["ok"], r["day"], r["ts"], r["updated_at"],
             r["label"], r["raw"], str(uuid.UUID(int=r["id"])), json.dumps({"k": r["id"], "tag": "é"}),
             ["a", str(r["id"])], Decimal(r["id"]) / 3 if r["id"] % 2 else None)
            for r in ROWS], page_size=5000)
        cur.execute("ANALYZE wide")

    with private_pg_database(setup) as name:
        yield name


def pg_conn(db: str, engine: str = "copy", **over):
    from eai_ray.ingestion.postgres import PostgresConnector

    tables = over.pop("tables", [{"name": "wide", "incremental": {"cursor": "updated_at"}}])
    cfg = dict(kind="postgres", name="pgsrc", database=db, tables=tables, **PG)
    cfg.update(over)
    return PostgresConnector(PostgresSource(**cfg), engine=engine)


def pg_expected(r: dict[str, Any]) -> dict[str, Any]:
    i = r["id"]
    big = Decimal(i) / 3 if i % 2 else None
    return {**r, "uid": str(uuid.UUID(int=i)), "doc": json.dumps({"k": i, "tag": "é"}, ensure_ascii=False),
            "tags": "{a," + str(i) + "}", "big": big, "_eai_raw": None, "_eai_error": None}


def test_pg_discover_maps_types(pg_db):
    schema = pg_conn(pg_db).discover("wide")
    types = {c.name: c.type for c in schema.columns}
    assert types == {
        "id": pa.int64(), "small": pa.int16(), "amount": pa.decimal128(18, 6), "ratio": pa.float64(),
        "ok": pa.bool_(), "day": pa.date32(), "ts": pa.timestamp("us"),
        "updated_at": pa.timestamp("us", tz="UTC"), "label": pa.string(), "raw": pa.binary(),
        "uid": pa.string(), "doc": pa.string(), "tags": pa.string(),
        # numeric without precision: Decimal(i) / 3 has 28 decimals and at most 5 integer digits
        "big": pa.decimal128(38, 28)}
    assert schema.primary_key == ["id"]
    # dates and timestamps are guarded (infinity, BC): a NOT NULL column may read NULL for a quarantined value ...
    assert next(c for c in schema.columns if c.name == "updated_at").nullable
    assert schema.arrow_schema().names[-2:] == ["_eai_raw", "_eai_error"]
    # ... but never when out-of-range values are clamped
    clamped = pg_conn(pg_db, on_out_of_range="clamp").discover("wide")
    assert not next(c for c in clamped.columns if c.name == "updated_at").nullable
    assert abs(schema.row_estimate - N) < N * 0.05


@pytest.mark.parametrize("engine", ["copy", "connectorx"])
def test_pg_values_round_trip_exactly(pg_db, engine):
    conn = pg_conn(pg_db, engine)
    table, ckpt, nbatches = read_table(conn, "wide", batch_rows=7_000)
    conn.close()
    assert table.num_rows == N and nbatches >= N // 7_000
    assert table.schema == conn.discover("wide").arrow_schema()
    got = by_id(table)
    for g, r in zip(got, ROWS):
        assert g == pg_expected(r), g["id"]
    assert ckpt == {"cursor": ROWS[-1]["updated_at"].isoformat()}


def test_pg_partitions_union_equals_full_read(pg_db):
    conn = pg_conn(pg_db)
    parts = conn.plan("wide", checkpoint=None, parallelism=4, batch_rows=10_000)
    assert len(parts) >= 5 and len({p.label for p in parts}) == len(parts)
    assert parts[0].predicate["lo"] is None and parts[-1].predicate["hi"] is None
    ids: list[int] = []
    for p in parts:
        table, _, _ = read_table(conn, "wide", partition=p, batch_rows=10_000)
        ids.extend(table.column("id").to_pylist())
    assert sorted(ids) == list(range(1, N + 1))
    assert len(ids) == len(set(ids))
    assert conn.plan("wide", checkpoint={"cursor": ROWS[-1]["updated_at"].isoformat()},
                     parallelism=4, batch_rows=10_000) == []
    conn.close()


def test_pg_every_batch_checkpoint_is_a_safe_resume_point(pg_db):
    conn = pg_conn(pg_db)
    batches = list(conn.read("wide", batch_rows=4_000))
    seen: set[int] = set()
    for b in batches[:-1]:
        seen.update(b.table.column("id").to_pylist())
        rest, _, _ = read_table(conn, "wide", checkpoint=b.checkpoint, batch_rows=50_000)
        assert seen.isdisjoint(rest.column("id").to_pylist())
        assert len(seen) + rest.num_rows == N, b.checkpoint
    conn.close()


def test_pg_incremental_sees_only_new_rows(pg_db):
    conn = pg_conn(pg_db)
    _, ckpt, _ = read_table(conn, "wide")
    assert read_table(conn, "wide", checkpoint=ckpt)[0] is None
    admin = pg_admin(pg_db)
    with admin.cursor() as cur:
        cur.execute("INSERT INTO wide (id, updated_at, label) VALUES (%s, %s, %s), (%s, %s, %s)",
                    (N + 1, T0 + dt.timedelta(days=30), "late", N + 2, T0 + dt.timedelta(days=31), "later"))
    try:
        new, ckpt2, _ = read_table(conn, "wide", checkpoint=ckpt)
        assert new.column("id").to_pylist() == [N + 1, N + 2]
        assert new.column("small").null_count == 2
        assert ckpt2 == {"cursor": (T0 + dt.timedelta(days=31)).isoformat()}
    finally:
        with admin.cursor() as cur:
            cur.execute("DELETE FROM wide WHERE id > %s", (N,))
        admin.close()
        conn.close()


def test_pg_query_resource_is_a_subquery(pg_db):
    conn = pg_conn(pg_db, tables=[{"name": "odd", "query": "SELECT id, label FROM wide WHERE id % 2 = 1",
                                   "partition_column": "id", "partitions": 3}])
    assert [c.name for c in conn.discover("odd").columns] == ["id", "label"]
    parts = conn.plan("odd", checkpoint=None, parallelism=2, batch_rows=100_000)
    assert len(parts) == 3
    ids = sorted(i for p in parts for i in read_table(conn, "odd", partition=p)[0].column("id").to_pylist())
    assert ids == list(range(1, N + 1, 2))
    conn.close()


@pytest.mark.parametrize("engine", ["copy", "connectorx"])
def test_pg_abandoned_read_leaves_the_pool_usable(pg_db, engine):
    conn = pg_conn(pg_db, engine)
    gen = conn.read("wide", batch_rows=1_000)
    next(gen)
    gen.close()  # the COPY is cut off half way; its connection must be discarded
    table, _, _ = read_table(conn, "wide")
    assert table.num_rows == N
    conn.close()


def test_pg_unknown_table_and_database(pg_db):
    conn = pg_conn(pg_db, tables=[{"name": "ghost"}])
    for call in (conn.check, lambda: conn.discover("ghost"), lambda: list(conn.read("ghost"))):
        with pytest.raises(SourceNotFound):
            call()
    with pytest.raises(SourceNotFound) as info:
        pg_conn(f"eai_missing_{suffix()}").check()
    assert not info.value.transient


def test_pg_bad_role_and_closed_port_keep_the_secret(pg_db, monkeypatch):
    # 127.0.0.1 is trust-authenticated here, so a wrong password passes; an unknown role does not
    secret = f"s3cret-{suffix()}"
    monkeypatch.setenv("EAI_TEST_PG_SECRET", secret)
    with pytest.raises(AuthenticationFailed) as info:
        pg_conn(pg_db, user=f"nobody_{suffix()}", password="${EAI_TEST_PG_SECRET}").check()
    assert_no_leak(info.value, secret)
    with pytest.raises(SourceUnavailable) as info:
        pg_conn(pg_db, port=free_port(), password="${EAI_TEST_PG_SECRET}", connect_timeout=2).check()
    assert info.value.transient
    assert_no_leak(info.value, secret)


# ====================================================================== MariaDB
@pytest.fixture(scope="module")
def my_db():
    name = f"eai_test_{suffix()}"
    user, password = f"eai_u_{suffix()}", f"pw-{suffix()}"
    admin = my_admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        for host in ("%", "127.0.0.1", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
            cur.execute(f"GRANT SELECT ON `{name}`.* TO %s@%s", (user, host))
    conn = my_admin(name)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute("""CREATE TABLE wide (
            id BIGINT PRIMARY KEY, small SMALLINT, amount DECIMAL(18,6), ratio DOUBLE, ok TINYINT(1),
            day DATE, ts DATETIME(6), updated_at TIMESTAMP(6) NOT NULL, label VARCHAR(200), raw VARBINARY(16),
            u INT UNSIGNED, doc JSON, kind ENUM('a','b'), INDEX (updated_at)) CHARACTER SET utf8mb4""")
        sql = "INSERT INTO wide VALUES (" + ", ".join(["%s"] * 13) + ")"
        for start in range(0, N, 5000):
            cur.executemany(sql, [
                (r["id"], r["small"], r["amount"], r["ratio"], r["ok"], r["day"], r["ts"],
                 r["updated_at"].replace(tzinfo=None), r["label"], r["raw"], r["id"] * 40_000,
                 json.dumps({"k": r["id"], "tag": "é"}, ensure_ascii=False), "ab"[r["id"] % 2])
                for r in ROWS[start:start + 5000]])
        cur.execute("ANALYZE TABLE wide")
    conn.close()
    yield {"database": name, "user": user, "password": password}
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        for host in ("%", "127.0.0.1", "localhost"):
            cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
    admin.close()


def my_conn(my_db, monkeypatch, **over):
    from eai_ray.ingestion.mysql import MySQLConnector

    monkeypatch.setenv("EAI_TEST_MY_PW", my_db["password"])
    tables = over.pop("tables", [{"name": "wide", "incremental": {"cursor": "updated_at"}}])
    cfg = dict(kind="mariadb", name="mysrc", host=MY["host"], port=MY["port"], database=my_db["database"],
               user=my_db["user"], password="${EAI_TEST_MY_PW}", tables=tables)
    cfg.update(over)
    return MySQLConnector(MySQLSource(**cfg))


def my_expected(r: dict[str, Any]) -> dict[str, Any]:
    i = r["id"]
    return {**r, "u": i * 40_000, "doc": json.dumps({"k": i, "tag": "é"}, ensure_ascii=False), "kind": "ab"[i % 2],
            "_eai_raw": None, "_eai_error": None}


def test_my_discover_maps_types(my_db, monkeypatch):
    schema = my_conn(my_db, monkeypatch).discover("wide")
    types = {c.name: c.type for c in schema.columns}
    assert types == {
        "id": pa.int64(), "small": pa.int16(), "amount": pa.decimal128(18, 6), "ratio": pa.float64(),
        "ok": pa.bool_(), "day": pa.date32(), "ts": pa.timestamp("us"),
        "updated_at": pa.timestamp("us", tz="UTC"), "label": pa.string(), "raw": pa.binary(),
        "u": pa.uint32(), "doc": pa.string(), "kind": pa.string()}
    assert schema.primary_key == ["id"]


def test_my_values_round_trip_exactly(my_db, monkeypatch):
    conn = my_conn(my_db, monkeypatch)
    table, ckpt, nbatches = read_table(conn, "wide", batch_rows=7_000)
    assert table.num_rows == N and nbatches >= N // 7_000
    assert table.schema == conn.discover("wide").arrow_schema()
    for g, r in zip(by_id(table), ROWS):
        assert g == my_expected(r), g["id"]
    assert ckpt == {"cursor": ROWS[-1]["updated_at"].isoformat()}
    conn.close()


def test_my_partitions_union_equals_full_read(my_db, monkeypatch):
    conn = my_conn(my_db, monkeypatch)
    parts = conn.plan("wide", checkpoint=None, parallelism=4, batch_rows=10_000)
    assert len(parts) >= 5
    ids: list[int] = []
    for p in parts:
        ids.extend(read_table(conn, "wide", partition=p)[0].column("id").to_pylist())
    assert sorted(ids) == list(range(1, N + 1)) and len(ids) == len(set(ids))
    conn.close()


def test_my_every_batch_checkpoint_is_a_safe_resume_point(my_db, monkeypatch):
    conn = my_conn(my_db, monkeypatch)
    seen: set[int] = set()
    for b in list(conn.read("wide", batch_rows=6_000))[:-1]:
        seen.update(b.table.column("id").to_pylist())
        rest, _, _ = read_table(conn, "wide", checkpoint=b.checkpoint)
        assert seen.isdisjoint(rest.column("id").to_pylist())
        assert len(seen) + rest.num_rows == N, b.checkpoint
    conn.close()


def test_my_incremental_sees_only_new_rows(my_db, monkeypatch):
    conn = my_conn(my_db, monkeypatch)
    _, ckpt, _ = read_table(conn, "wide")
    assert read_table(conn, "wide", checkpoint=ckpt)[0] is None
    admin = my_admin(my_db["database"])
    with admin.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute("INSERT INTO wide (id, updated_at) VALUES (%s, %s)",
                    (N + 1, (T0 + dt.timedelta(days=30)).replace(tzinfo=None)))
    try:
        new, ckpt2, _ = read_table(conn, "wide", checkpoint=ckpt)
        assert new.column("id").to_pylist() == [N + 1]
        assert ckpt2 == {"cursor": (T0 + dt.timedelta(days=30)).isoformat()}
    finally:
        with admin.cursor() as cur:
            cur.execute("DELETE FROM wide WHERE id > %s", (N,))
        admin.close()
        conn.close()


def test_my_unknown_table(my_db, monkeypatch):
    conn = my_conn(my_db, monkeypatch, tables=[{"name": "ghost"}])
    for call in (conn.check, lambda: conn.discover("ghost"), lambda: list(conn.read("ghost"))):
        with pytest.raises(SourceNotFound):
            call()


def test_my_wrong_password_and_closed_port_keep_the_secret(my_db, monkeypatch):
    wrong = f"wrong-{suffix()}"
    monkeypatch.setenv("EAI_TEST_MY_WRONG", wrong)
    with pytest.raises(AuthenticationFailed) as info:
        my_conn(my_db, monkeypatch, password="${EAI_TEST_MY_WRONG}").check()
    assert not info.value.transient and info.value.context.get("error_code") == 1045
    assert_no_leak(info.value, wrong, my_db["password"])
    with pytest.raises(SourceUnavailable) as info:
        my_conn(my_db, monkeypatch, port=free_port(), connect_timeout=2).check()
    assert info.value.transient
    assert_no_leak(info.value, my_db["password"])
