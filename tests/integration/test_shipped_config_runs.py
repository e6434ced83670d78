"""The shipped `configs/local_postgres.yaml` runs to OK as its header comment says, twice.

The table is created with the SQL the comment gives (an unconstrained `numeric` amount), in a
private database; only the database name and state folder differ from the file.
"""
from pathlib import Path

import pytest
import yaml

from eai_ray.config import parse_pipeline
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from tests.integration.cases_db import pg_admin

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "local_postgres.yaml"


def test_local_postgres_example_runs_ok_and_rerun_changes_nothing(tmp_path, pg_database, monkeypatch):
    header = [ln.lstrip("# ").rstrip() for ln in CONFIG.read_text().splitlines() if ln.startswith("#")]
    create = " ".join(ln for ln in header if "CREATE TABLE" in ln or "round(" in ln or "FROM generate_series" in ln)
    create = create[create.index("CREATE TABLE"):].rstrip('"')
    con = pg_admin(pg_database)
    with con.cursor() as cur:
        cur.execute(create)
    con.close()
    for var in ("PGHOST", "PGUSER", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    data = yaml.safe_load(CONFIG.read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["sources"][0]["database"] = pg_database
    cfg = parse_pipeline(data)

    first = PipelineRunner(cfg, executor=LocalExecutor()).run()
    assert first.status == "ok", ([t.error for t in first.tables], first.gold)
    orders = first.tables[0]
    assert orders.inserted == 100_000 and orders.reconciled
    assert first.gold[0]["rows"] == 100

    second = PipelineRunner(cfg, executor=LocalExecutor()).run()
    assert second.status == "ok"
    again = second.tables[0]
    assert again.bronze_rows == 0 and again.inserted == again.updated == 0 and again.reconciled
