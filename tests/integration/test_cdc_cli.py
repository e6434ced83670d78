"""`eai cdc start|status|stop PIPELINE.yaml` against a private Ray head (token auth on) and PostgreSQL."""
import json
import subprocess
from pathlib import Path

import pytest

from eai_ray.config import load_pipeline
from eai_ray.storage import tables
from eai_ray.storage.catalog import open_catalog
from tests.integration.cdc_workload import wait_until
from tests.integration.ray_head import ray_head

pytestmark = pytest.mark.integration


def test_cdc_commands_start_inspect_and_stop_the_actor(private_postgres, tmp_path):
    db = private_postgres.create_database("cdc_cli")
    conn = private_postgres.connect(db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric(10,2))")
    cur.execute("INSERT INTO orders VALUES (1, 9.50)")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"""
name: clitest
state_dir: {tmp_path / 'state'}
sources:
  - kind: postgres
    name: shop
    port: {private_postgres.port}
    user: postgres
    database: {db}
    tables: [{{name: orders}}]
    cdc: {{flush_seconds: 0.2}}
""")
    with ray_head() as head:
        env = {**head["env"], "RAY_ADDRESS": head["address"]}
        eai = str(Path(head["env"]["PATH"].split(":")[0]) / "eai")

        def eai_cdc(*args):
            out = subprocess.run([eai, "cdc", *args, str(pipeline), "--json"], env=env, capture_output=True,
                                 text=True, timeout=120)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            return json.loads(out.stdout)

        started = eai_cdc("start")
        assert started[0]["actor"] == "eai.cdc.clitest.shop"
        catalog = open_catalog(load_pipeline(pipeline))
        cur.execute("INSERT INTO orders VALUES (2, 20.00)")
        assert wait_until(lambda: tables.exists(catalog, "silver.shop_orders") and len(
            tables.read(tables.load(catalog, "silver.shop_orders"))) == 2, timeout=60)
        status = wait_until(lambda: (lambda s: s if s[0].get("events") else None)(eai_cdc("status")), timeout=30)
        st = status[0]
        assert st["state"] == "streaming" and st["events"] >= 1 and st["position"] and st["last_commit_at"]
        assert st["lag"]["exists"] and "lag_bytes" in st["lag"] and "events_per_s" in st
        stopped = eai_cdc("stop")
        assert stopped[0]["state"] == "stopped"

        def status_after_stop():
            out = subprocess.run([eai, "cdc", "status", str(pipeline), "--json"], env=env, capture_output=True,
                                 text=True, timeout=120)
            return out.returncode, json.loads(out.stdout)[0]["state"]

        # the actor goes away shortly after `stop` answers: wait for it instead of sleeping a guess
        assert wait_until(lambda: status_after_stop() == (1, "absent"), timeout=60), status_after_stop()
    conn.close()
