"""Production layout: Iceberg catalog and metadata catalog on PostgreSQL instead of embedded SQLite."""
import json
import uuid

import psycopg2
import pytest

from eai_ray.config import parse_pipeline
from eai_ray.demo.sample import build_files
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.catalog import open_catalog
from eai_ray.storage.lineage import openlineage_events
from eai_ray.storage.metadata import MetadataStore

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_database():
    name = f"eai_cat_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_pipeline_on_postgres_catalogs(tmp_path, pg_database):
    import random

    counts = build_files(tmp_path / "files", random.Random(3), products=40, events=50)
    cfg = parse_pipeline({
        "name": "pgcat", "state_dir": str(tmp_path / "state"), "metadata_uri": pg_database,
        "catalog": {"type": "sql", "uri": pg_database, "warehouse": str(tmp_path / "warehouse")},
        "sources": [{"kind": "files", "name": "drop", "path": str(tmp_path / "files"), "resources": [
            {"name": "products", "pattern": "products/*.csv", "primary_key": ["id"]}]}],
        "gold": [{"name": "by_category", "sql": "SELECT category, COUNT(*) AS n FROM silver.drop_products GROUP BY 1"}],
    })
    summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    assert summary.status == "ok", summary.to_dict()
    assert summary.tables[0].bronze_rows == counts["products"]
    catalog = open_catalog(cfg)
    assert type(catalog).__name__ == "SqlCatalog" and "postgresql" in catalog.properties["uri"]
    assert catalog.load_table("gold.by_category").scan().to_arrow().num_rows > 0
    # the catalog tables really live in PostgreSQL
    dbname = pg_database.rsplit("/", 1)[1]
    con = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=dbname)
    cur = con.cursor()
    cur.execute("SELECT count(*) FROM iceberg_tables")
    assert cur.fetchone()[0] >= 4
    cur.execute("SELECT count(*) FROM eai_lineage")
    assert cur.fetchone()[0] > 0
    con.close()
    events = openlineage_events(MetadataStore.for_pipeline(cfg), namespace="pgcat")
    gold_events = [e for e in events if e["outputs"][0]["name"] == "gold.by_category"]
    assert [e["eventType"] for e in gold_events] == ["START", "COMPLETE"]
    gold = gold_events[1]
    assert {"name": "silver.drop_products", "namespace": "pgcat"} in gold["inputs"]
    fields = gold["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert fields["category"]["inputFields"][0]["field"] == "category"
    json.dumps(events)  # serialisable as OpenLineage JSON
