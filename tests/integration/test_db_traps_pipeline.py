"""The trap database through a whole pipeline: a plain YAML (a schema, no table list, auto silver)
lands every table, every row is accounted for (landed + quarantined = source rows), values match
the source, the case-colliding pair stays apart in gold, and a second run changes nothing."""
from __future__ import annotations

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.catalog import open_catalog
from tests.integration.cases_db import PG, pg_admin
from tests.integration.test_db_traps import SCHEMA, TABLES, pg_traps  # noqa: F401 - the module fixture

pytestmark = pytest.mark.integration


def source_counts(db: str) -> dict[str, int]:
    conn = pg_admin(db)
    out = {}
    with conn.cursor() as cur:
        for t in TABLES:
            cur.execute(f'SELECT count(*) FROM "{SCHEMA}"."{t}"')
            out[t] = cur.fetchone()[0]
    conn.close()
    return out


def test_plain_yaml_lands_every_table_and_a_rerun_changes_nothing(tmp_path, pg_traps):  # noqa: F811
    cfg = parse_pipeline({
        "name": "traps", "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "postgres", "name": "pg", "database": pg_traps, "schema": SCHEMA, **PG}],
        "gold": [{"name": "pair", "sql": 'SELECT SUM("Total") AS upper_total, SUM(total__2) AS lower_total '
                                         "FROM silver.pg_odd_names"}],
    })
    summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    reps = {t.source.split(".", 1)[1]: t for t in summary.tables}
    assert summary.status == "ok", {k: r.error for k, r in reps.items() if r.error} or summary.gold
    assert set(reps) == set(TABLES)  # the partitioned table once, by its parent; the view as a table
    counts = source_counts(pg_traps)
    catalog = open_catalog(cfg)
    for name, rep in reps.items():
        assert rep.rows_read == counts[name], name
        assert rep.silver_in == rep.accepted + rep.quarantined + rep.duplicates + rep.stale, name
        assert rep.reconciled, name
        silver_rows = catalog.load_table(rep.silver).scan().to_arrow().num_rows
        assert silver_rows + rep.quarantined + rep.duplicates == counts[name], name
    # every out-of-range value was quarantined under its column, not a whole table
    assert reps["times"].quarantine_reasons and all(r.startswith("type:") for r in reps["times"].quarantine_reasons)
    assert reps["events"].mode == "merge" and reps["keyless"].mode == "replace"
    assert reps["odd.names"].renamed == {"total": "total__2"}
    pair = catalog.load_table("gold.pair").scan().to_arrow().to_pylist()[0]
    assert (pair["upper_total"], pair["lower_total"]) == (15, 150)

    again = PipelineRunner(cfg, executor=LocalExecutor()).run()
    assert again.status == "ok"
    for rep in again.tables:
        assert rep.inserted == rep.updated == rep.deleted == 0, rep.source
        assert rep.bronze_rows == 0 and rep.reconciled, rep.source
