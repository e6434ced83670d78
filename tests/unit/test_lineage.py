"""Lineage: directions as data flows, OpenLineage events at the run's own times."""
import datetime as dt

from eai_ray.storage import metadata as M
from eai_ray.storage.lineage import LineageGraph, openlineage_events
from eai_ray.storage.metadata import MetadataStore


def _store(tmp_path) -> MetadataStore:
    return MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")


def _set_run_times(store, run_id, started, finished):
    with store.engine.begin() as c:
        c.execute(M.runs.update().where(M.runs.c.run_id == run_id).values(started_at=started, finished_at=finished))


def test_openlineage_has_start_and_end_at_the_runs_times(tmp_path):
    store = _store(tmp_path)
    store.start_run("r1", "p")
    store.record_edges([("silver.orders", "amount", "gold.revenue", "total", "sum")], run_id="r1")
    store.finish_run("r1", "ok", {})
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    finished = started + dt.timedelta(minutes=7)
    _set_run_times(store, "r1", started, finished)
    events = openlineage_events(store, namespace="ns")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert dt.datetime.fromisoformat(events[0]["eventTime"]) == started
    assert dt.datetime.fromisoformat(events[1]["eventTime"]) == finished
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    fields = events[1]["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert fields["total"]["inputFields"][0] == {"namespace": "ns", "name": "silver.orders", "field": "amount",
                                                 "transformations": [{"type": "DIRECT", "subtype": "SUM"}]}


def test_a_failed_run_ends_with_fail_and_a_running_one_has_only_start(tmp_path):
    store = _store(tmp_path)
    store.start_run("bad", "p")
    store.record_edges([("bronze.a", "x", "silver.a", "x", "copy")], run_id="bad")
    store.finish_run("bad", "failed", {})
    store.start_run("going", "p")
    store.record_edges([("bronze.b", "y", "silver.b", "y", "copy")], run_id="going")
    by_table = {}
    for e in openlineage_events(store):
        by_table.setdefault(e["outputs"][0]["name"], []).append(e["eventType"])
    assert by_table == {"silver.a": ["START", "FAIL"], "silver.b": ["START"]}


def test_upstream_and_downstream_edges_point_the_way_data_flows():
    g = LineageGraph([
        {"src_table": "bronze.o", "src_column": "amt", "dst_table": "silver.o", "dst_column": "amount", "transform": "cast"},
        {"src_table": "silver.o", "src_column": "amount", "dst_table": "gold.r", "dst_column": "total", "transform": "sum"},
    ])
    up = g.upstream("gold.r", "total")
    assert [(e["from"], e["to"], e["depth"]) for e in up] == [("silver.o.amount", "gold.r.total", 1),
                                                              ("bronze.o.amt", "silver.o.amount", 2)]
    down = g.downstream("bronze.o", "amt")
    assert [(e["from"], e["to"]) for e in down] == [("bronze.o.amt", "silver.o.amount"),
                                                    ("silver.o.amount", "gold.r.total")]
    assert g.impact("bronze.o") == ["gold.r", "silver.o"]
