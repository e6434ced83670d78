"""End to end on a real local Ray: the demo's messy sources into bronze/silver/gold Iceberg tables.

Reconciliation is checked exactly, against the tables themselves:
bronze rows = source rows; silver + quarantine + removed duplicates = rows consumed from bronze.
"""
import json
import os
import subprocess
import sys

import pytest

from eai_ray.config import load_pipeline
from eai_ray.demo.sample import build_demo
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.catalog import open_catalog
from eai_ray.storage.lineage import LineageGraph
from eai_ray.storage.metadata import MetadataStore

pytestmark = pytest.mark.integration


def count(catalog, name):
    return catalog.load_table(name).scan().to_arrow().num_rows if catalog.table_exists(name) else 0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, ray_session):
    from actors.executor import RayExecutor

    root = tmp_path_factory.mktemp("demo")
    with build_demo(root, rows=2000) as demo:
        cfg = load_pipeline(demo.pipeline_path)
        executor = RayExecutor()
        first = PipelineRunner(cfg, executor=executor).run()
        second = PipelineRunner(cfg, executor=executor).run()
        yield demo, cfg, first, second


def test_bronze_keeps_every_source_row(demo_run):
    demo, cfg, first, _ = demo_run
    catalog = open_catalog(cfg)
    by_source = {t.source: t for t in first.tables}
    expected = {"shop.customers": demo.source_rows["customers"], "shop.orders": demo.source_rows["orders"],
                "drop.products": demo.source_rows["products"], "drop.events": demo.source_rows["events"],
                "api.payments": demo.source_rows["payments"]}
    for source, n in expected.items():
        rep = by_source[source]
        assert rep.status == "ok", rep.error
        assert rep.bronze_rows == n, source
        assert count(catalog, rep.bronze) >= n


def test_silver_quarantine_duplicates_reconcile_exactly(demo_run):
    _, cfg, first, second = demo_run
    catalog = open_catalog(cfg)
    later = {t.source: t for t in second.tables}
    for rep in first.tables:
        again = later[rep.source]  # the second run re-delivers only the REST full refresh
        silver_rows = count(catalog, rep.silver)
        quarantine_rows = count(catalog, rep.silver.replace("silver.", "quarantine."))
        assert rep.silver_in == rep.bronze_rows
        assert silver_rows == rep.inserted + again.inserted
        assert quarantine_rows == rep.quarantined + again.quarantined
        # first run: every bronze row is a silver row, a quarantined row or a removed duplicate
        assert rep.bronze_rows == rep.inserted + rep.quarantined + rep.duplicates + rep.stale, rep.source
        assert again.silver_in == (again.updated + again.inserted + again.unchanged + again.quarantined
                                   + again.duplicates + again.stale)
        assert again.reconciled, again.source
    assert first.status == "ok" and second.status == "ok"


def test_quarantine_reasons_name_the_rules(demo_run):
    _, cfg, first, _ = demo_run
    reasons = {rule for t in first.tables for rule in t.quarantine_reasons}
    for rule in ("valid_email", "amount_not_negative", "known_status", "type:amount", "type:price", "parse",
                 "amount_positive"):
        assert rule in reasons, (rule, reasons)
    catalog = open_catalog(cfg)
    q = catalog.load_table("quarantine.orders").scan().to_arrow().to_pylist()
    amount = next(r for r in q if r["_eai_rule"] == "type:amount")
    assert "is not a valid decimal" in amount["_eai_reason"] and json.loads(amount["_eai_record"])["id"]


def test_second_run_is_incremental(demo_run):
    _, cfg, first, second = demo_run
    by_source = {t.source: t for t in second.tables}
    assert by_source["shop.orders"].bronze_rows == 0  # cursor: nothing new in SQLite
    assert by_source["drop.products"].bronze_rows == 0  # same files, same mtimes
    pay = by_source["api.payments"]  # REST without a cursor: re-read whole, the same records are not landed again
    assert pay.rows_read > 0 and pay.bronze_rows == 0 and pay.bronze_skipped == pay.rows_read
    assert pay.inserted == pay.updated == 0 and pay.reconciled
    catalog = open_catalog(cfg)
    assert count(catalog, "silver.payments") == {t.source: t for t in first.tables}["api.payments"].inserted


def test_gold_lineage_and_quality(demo_run):
    _, cfg, first, _ = demo_run
    assert {g["name"] for g in first.gold if g["status"] == "ok"} == {
        "gold.revenue_by_country", "gold.daily_orders", "gold.top_customers"}
    catalog = open_catalog(cfg)
    assert count(catalog, "gold.revenue_by_country") > 0
    graph = LineageGraph.load(MetadataStore.for_pipeline(cfg))
    up = {e["from"] for e in graph.upstream("gold.revenue_by_country", "revenue")}  # what feeds it
    assert {"silver.orders.amount", "bronze.shop_orders.amount", "source:shop.orders.amount"} <= up
    assert "gold.top_customers" in graph.impact("silver.customers", "country")
    q = MetadataStore.for_pipeline(cfg).quality("silver.customers")
    dims = {r["dimension"] for r in q}
    assert {"completeness", "validity", "timeliness", "overall"} <= dims


def test_crash_after_bronze_then_rerun_loses_and_doubles_nothing(tmp_path):
    """Kill the `eai run` process right after a bronze commit; the re-run finishes the job exactly once."""
    with build_demo(tmp_path / "d", rows=500) as demo:
        env = {**os.environ, "EAI_RAY_DASHBOARD": "0", "EAI_INJECT_CRASH": "after_bronze:shop.orders"}
        cmd = [sys.executable, "-m", "eai_ray.cli", "run", str(demo.pipeline_path), "--local", "--json"]
        crashed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert crashed.returncode == 77
        env.pop("EAI_INJECT_CRASH")
        env["EAI_INJECT_CRASH"] = "after_quarantine:silver.orders"
        crashed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert crashed.returncode == 77
        env.pop("EAI_INJECT_CRASH")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        cfg = load_pipeline(demo.pipeline_path)
        catalog = open_catalog(cfg)
        orders = catalog.load_table("bronze.shop_orders").scan().to_arrow()
        assert orders.num_rows == demo.source_rows["orders"]  # no duplicate in bronze
        silver = catalog.load_table("silver.orders").scan().to_arrow()
        assert silver.num_rows == len(set(silver.column("id").to_pylist()))
        q = count(catalog, "quarantine.orders")
        summary = json.loads(done.stdout)
        rep = next(t for t in summary["tables"] if t["source"] == "shop.orders")
        assert rep["silver_in"] == demo.source_rows["orders"]  # silver consumed the crashed run's load
        assert silver.num_rows + q + rep["duplicates"] + rep["stale"] == demo.source_rows["orders"]


def test_cli_demo_json_exit_code_and_summary(tmp_path):
    env = {**os.environ, "EAI_RAY_DASHBOARD": "0"}
    out = subprocess.run([sys.executable, "-m", "eai_ray.cli", "demo", "--dir", str(tmp_path / "cli"), "--json",
                          "--rows", "300"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["status"] == "ok" and summary["executor"] == "ray"
    assert all(t["reconciled"] for t in summary["tables"])
    assert "Traceback" not in out.stderr
    # the inspection commands read the same pipeline (remembered in ./.eai/last_pipeline)
    tables = subprocess.run([sys.executable, "-m", "eai_ray.cli", "tables", "--json"], capture_output=True,
                            text=True, cwd=tmp_path, env=env)
    assert tables.returncode == 0 and "gold.revenue_by_country" in tables.stdout
    hist = subprocess.run([sys.executable, "-m", "eai_ray.cli", "history", "silver.orders", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert json.loads(hist.stdout)[0]["run_id"] == summary["run_id"]
    bad = subprocess.run([sys.executable, "-m", "eai_ray.cli", "show", "silver.nope"], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
