"""A pipeline whose silver table declares `enrich:`: the classified column lands in silver, with lineage."""
import sqlite3

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.catalog import open_catalog

pytestmark = pytest.mark.integration

TICKETS = [(1, "The blender stopped working after two days and nobody answers my emails."),
           (2, "Absolutely love these headphones, the sound is amazing!"),
           (3, "Where is my parcel? The tracking number has not updated for a week."),
           (4, None)]
LABELS = {"complaint": "a customer complaint about a broken product or bad service",
          "praise": "a happy customer praising a product they love",
          "shipping": "a question about where a parcel is or when it will be delivered"}


def test_silver_enrichment_in_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EAI_ENRICH_VIA", "local")
    db = tmp_path / "src.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO tickets VALUES (?, ?)", TICKETS)
    con.commit()
    cfg = parse_pipeline({
        "name": "enr", "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "sqlite", "name": "s", "path": str(db), "tables": [{"name": "tickets",
                                                                                 "primary_key": ["id"]}]}],
        "silver": [{"name": "tickets", "source": "s.tickets", "primary_key": ["id"],
                    "enrich": [{"column": "body", "task": "classify", "labels": LABELS, "output": "topic"}]}],
    })
    summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    assert summary.status == "ok", summary.to_dict()
    rows = open_catalog(cfg).load_table("silver.tickets").scan().to_arrow().sort_by("id").to_pylist()
    assert [r["topic"] for r in rows] == ["complaint", "praise", "shipping", None]
    assert all(0 < r["topic_confidence"] <= 1 for r in rows[:3])

    from eai_ray.storage.metadata import MetadataStore
    store = MetadataStore.for_pipeline(cfg)
    edges = {(e["src_column"], e["dst_column"]) for e in store.edges() if e["transform"] == "enrich"}
    assert edges == {("body", "topic"), ("body", "topic_confidence")}
