"""Schema evolution through a whole run: added columns flow downstream, removed ones are flagged and
filled with nulls, an incompatible type change stops that table only."""
import sqlite3

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.catalog import open_catalog
from eai_ray.storage.metadata import MetadataStore

pytestmark = pytest.mark.integration


def pipeline(tmp_path, db):
    return parse_pipeline({
        "name": "evo", "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "sqlite", "name": "s", "path": str(db), "tables": [
            {"name": "items", "primary_key": ["id"], "incremental": {"cursor": "id"}},
            {"name": "other", "primary_key": ["id"], "incremental": {"cursor": "id"}}]}],
    })


def run(cfg):
    return {t.source: t for t in PipelineRunner(cfg, executor=LocalExecutor()).run().tables}


def test_add_remove_and_incompatible_columns(tmp_path):
    db = tmp_path / "src.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);
        CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT);
        INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2);
        INSERT INTO other VALUES (1, 'x');
    """)
    con.commit()
    cfg = pipeline(tmp_path, db)
    first = run(cfg)
    assert first["s.items"].inserted == 2

    # a new source column is added downstream automatically and recorded as a schema version
    con.executescript("ALTER TABLE items ADD COLUMN color TEXT; INSERT INTO items VALUES (3, 'c', 3, 'red');")
    con.commit()
    second = run(cfg)
    rep = second["s.items"]
    assert rep.status == "ok"
    assert {"kind": "added", "column": "color", "new": "string"} in [
        {k: v for k, v in c.items() if k in ("kind", "column", "new")} for c in rep.schema_changes]
    catalog = open_catalog(cfg)
    rows = {r["id"]: r for r in catalog.load_table("silver.s_items").scan().to_arrow().to_pylist()}
    assert rows[3]["color"] == "red" and rows[1]["color"] is None
    history = MetadataStore.for_pipeline(cfg).schema_history("silver.s_items")
    assert len(history) >= 2 and "color" in history[-1]["schema_json"]

    # a removed column is flagged and filled with nulls
    con.executescript("ALTER TABLE items DROP COLUMN qty; INSERT INTO items VALUES (4, 'd', 'blue');")
    con.commit()
    third = run(cfg)
    rep = third["s.items"]
    assert rep.status == "ok"
    assert any(c["kind"] == "removed" and c["column"] == "qty" for c in rep.schema_changes)
    rows = {r["id"]: r for r in catalog.load_table("silver.s_items").scan().to_arrow().to_pylist()}
    assert rows[4]["qty"] is None and rows[1]["qty"] == 1

    # an incompatible type change stops that table with a typed error; the other table goes on
    con.executescript("""
        CREATE TABLE items2 (id INTEGER PRIMARY KEY, name BLOB, color TEXT);
        INSERT INTO items2 SELECT id, CAST(name AS BLOB), color FROM items;
        INSERT INTO items2 VALUES (5, X'00FF', 'green');
        DROP TABLE items; ALTER TABLE items2 RENAME TO items;
        INSERT INTO other VALUES (2, 'y');
    """)
    con.commit()
    summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    by = {t.source: t for t in summary.tables}
    assert by["s.items"].status == "failed"
    assert by["s.items"].error["type"] == "IncompatibleSchemaChange"
    assert by["s.other"].status == "ok" and by["s.other"].inserted == 1
    assert summary.status == "partial"
