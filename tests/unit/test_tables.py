"""Iceberg table operations on a real embedded catalog: merge, evolution, history, time travel."""
import datetime as dt

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from eai_ray.errors import IncompatibleSchemaChange
from eai_ray.storage import tables as T


@pytest.fixture
def catalog(tmp_path):
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh",
                     init_catalog_tables="true")
    cat.create_namespace("silver")
    return cat


def rows(tbl):
    return {r["id"]: r for r in tbl.scan().to_arrow().to_pylist()}


def seed(catalog, n=1000):
    data = pa.table({"id": pa.array(range(n), pa.int64()), "v": [f"v{i}" for i in range(n)],
                     "seq": pa.array([1] * n, pa.int64())})
    T.evolve(catalog, "silver.t", data.schema)
    T.append(catalog, "silver.t", data, run_id="r0")
    return data


def test_merge_updates_inserts_and_ignores_stale(catalog):
    seed(catalog)
    ch = pa.table({"id": pa.array([5, 6, 6, 2000], pa.int64()), "v": ["new5", "old6", "new6", "ins"],
                   "seq": pa.array([2, 2, 3, 1], pa.int64())})
    st = T.merge(catalog, "silver.t", ch, keys=["id"], sequence_by="seq", run_id="r1")
    assert (st.inserted, st.updated, st.stale) == (1, 2, 0)
    got = rows(catalog.load_table("silver.t"))
    assert len(got) == 1001 and got[5]["v"] == "new5" and got[6]["v"] == "new6" and got[2000]["v"] == "ins"
    # a replayed older event never overwrites newer data
    st = T.merge(catalog, "silver.t", pa.table({"id": pa.array([5], pa.int64()), "v": ["replay"],
                                                 "seq": pa.array([1], pa.int64())}),
                 keys=["id"], sequence_by="seq", run_id="r2")
    assert st.stale == 1 and rows(catalog.load_table("silver.t"))[5]["v"] == "new5"


def test_merge_deletes_and_snapshot_carries_run_id(catalog):
    seed(catalog, 10)
    ch = pa.table({"id": pa.array([1, 2], pa.int64()), "v": ["x", "y"], "seq": pa.array([5, 5], pa.int64()),
                   "__op_delete": [True, False]})
    st = T.merge(catalog, "silver.t", ch, keys=["id"], sequence_by="seq", run_id="r9", delete_flag="__op_delete")
    assert st.deleted == 1 and st.updated == 1
    tbl = catalog.load_table("silver.t")
    assert 1 not in rows(tbl) and rows(tbl)[2]["v"] == "y"
    h = T.history(tbl)
    assert h[0]["run_id"] == "r9"
    # the merge rewrote the 10-row file: history says what changed, not what was rewritten
    assert (h[0]["added_rows"], h[0]["updated_rows"], h[0]["deleted_rows"]) == (0, 1, 1)
    assert h[0]["rewritten_rows"] == 9 and h[0]["total_rows"] == 9
    assert (h[1]["added_rows"], h[1]["updated_rows"], h[1]["deleted_rows"], h[1]["total_rows"]) == (10, 0, 0, 10)


def test_merge_prunes_files_by_key_range(catalog):
    seed(catalog, 100)
    more = pa.table({"id": pa.array(range(100, 200), pa.int64()), "v": ["w"] * 100, "seq": pa.array([1] * 100, pa.int64())})
    T.append(catalog, "silver.t", more, run_id="r1")
    st = T.merge(catalog, "silver.t", pa.table({"id": pa.array([150], pa.int64()), "v": ["z"],
                                                 "seq": pa.array([2], pa.int64())}),
                 keys=["id"], sequence_by="seq", run_id="r2")
    assert st.files_total == 2 and st.files_rewritten == 1
    assert len(rows(catalog.load_table("silver.t"))) == 200


def test_schema_evolution(catalog):
    seed(catalog, 3)
    wider = pa.schema([("id", pa.int64()), ("v", pa.string()), ("seq", pa.int64()), ("extra", pa.float64())])
    _, changes = T.evolve(catalog, "silver.t", wider)
    assert [c.kind for c in changes] == ["added"]
    narrower = pa.schema([("id", pa.int64()), ("seq", pa.int64()), ("extra", pa.float64())])
    _, changes = T.evolve(catalog, "silver.t", narrower)
    assert [(c.kind, c.column) for c in changes] == [("removed", "v")]
    T.append(catalog, "silver.t", pa.table({"id": pa.array([9], pa.int64()), "seq": pa.array([1], pa.int64()),
                                            "extra": [1.5]}), run_id="r1")
    assert rows(catalog.load_table("silver.t"))[9]["v"] is None
    with pytest.raises(IncompatibleSchemaChange) as e:
        T.evolve(catalog, "silver.t", pa.schema([("id", pa.string())]))
    assert e.value.context["column"] == "id" and not e.value.transient


def test_widening_int_to_long(catalog):
    T.evolve(catalog, "silver.w", pa.schema([("a", pa.int32())]))
    _, changes = T.evolve(catalog, "silver.w", pa.schema([("a", pa.int64())]))
    assert changes[0].kind == "widened"


def test_time_travel(catalog):
    seed(catalog, 3)
    tbl = catalog.load_table("silver.t")
    first = tbl.current_snapshot().snapshot_id
    when = dt.datetime.now(dt.timezone.utc)
    T.merge(catalog, "silver.t", pa.table({"id": pa.array([0], pa.int64()), "v": ["changed"],
                                            "seq": pa.array([2], pa.int64())}),
            keys=["id"], sequence_by="seq", run_id="r1")
    tbl = catalog.load_table("silver.t")
    assert T.read(tbl, snapshot_id=first).to_pylist()[0]["v"] == "v0"
    assert T.snapshot_as_of(tbl, when) == first


def test_merge_counts_rows_equal_to_the_stored_ones_as_unchanged(catalog):
    data = seed(catalog, 100)
    snap = catalog.load_table("silver.t").current_snapshot().snapshot_id
    st = T.merge(catalog, "silver.t", data, keys=["id"], sequence_by="seq", run_id="again")
    assert (st.inserted, st.updated, st.unchanged) == (0, 0, 100)
    assert catalog.load_table("silver.t").current_snapshot().snapshot_id == snap  # nothing rewritten
    changed = data.set_column(1, "v", pa.array(["v0-changed"] + [f"v{i}" for i in range(1, 100)]))
    st = T.merge(catalog, "silver.t", changed, keys=["id"], sequence_by="seq", run_id="one")
    assert (st.inserted, st.updated, st.unchanged) == (0, 1, 99)
    assert rows(catalog.load_table("silver.t"))[0]["v"] == "v0-changed"


def test_replace_reports_what_changed_and_skips_an_equal_content(catalog):
    data = pa.table({"id": pa.array([1, 1, 2], pa.int64()), "v": ["a", "a", None], "seq": pa.array([1, 1, 1])})
    T.evolve(catalog, "silver.t", data.schema)
    st = T.replace(catalog, "silver.t", data, run_id="r1")
    assert (st.inserted, st.deleted, st.unchanged) == (3, 0, 0)
    snap = catalog.load_table("silver.t").current_snapshot().snapshot_id
    st = T.replace(catalog, "silver.t", data.take([2, 0, 1]), run_id="r2")  # same rows in another order
    assert (st.inserted, st.deleted, st.unchanged) == (0, 0, 3)
    assert catalog.load_table("silver.t").current_snapshot().snapshot_id == snap
    st = T.replace(catalog, "silver.t", data.slice(1), run_id="r3")  # one of the two equal rows is gone
    assert (st.inserted, st.deleted, st.unchanged) == (0, 1, 2)
    assert T.row_count(catalog.load_table("silver.t")) == 2


def test_commit_conflicts_are_retried_then_the_last_raised():
    from pyiceberg.exceptions import CommitFailedException

    from eai_ray.errors import CommitConflict
    from eai_ray.retry import COMMIT_CONFLICT

    calls, slept = [], []

    def go():
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedException("another writer committed first")
        return 42

    assert T._retry_commit(go, table="silver.t", sleep=slept.append) == 42
    assert len(calls) == 3 and len(slept) == 2 and slept[0] <= COMMIT_CONFLICT.base

    def never():
        calls.append(1)
        raise CommitFailedException("stale")

    calls.clear()
    with pytest.raises(CommitConflict, match="commit to silver.t kept conflicting: stale") as info:
        T._retry_commit(never, table="silver.t", sleep=slept.append)
    assert len(calls) == COMMIT_CONFLICT.attempts and info.value.transient


def test_merge_that_deletes_every_row_of_the_rewritten_file_commits_one_snapshot(catalog):
    seed(catalog, 1)
    before = len(catalog.load_table("silver.t").metadata.snapshots)
    ch = pa.table({"id": pa.array([0], pa.int64()), "v": ["v0"], "seq": pa.array([2], pa.int64()), "d": [True]})
    st = T.merge(catalog, "silver.t", ch, keys=["id"], sequence_by="seq", run_id="gone", delete_flag="d")
    assert (st.deleted, st.files_rewritten) == (1, 1)
    tbl = catalog.load_table("silver.t")
    assert len(tbl.metadata.snapshots) == before + 1 and rows(tbl) == {}
    props = T.summary(tbl)
    assert props["eai.run_id"] == "gone" and props["eai.merge.deleted"] == "1" and props["eai.merge.inserted"] == "0"


def test_written_data_files_carry_counts_key_bounds_and_field_ids(catalog):
    """What merge and commit_files rely on from pyiceberg's writer: record counts, the key column's
    bounds (file pruning reads them), an unpartitioned partition, Parquet field ids, one file per
    target size; no rows, no files."""
    import pyarrow.parquet as pq
    from pyiceberg.conversions import from_bytes

    data = seed(catalog, 0)
    tbl = catalog.load_table("silver.t")
    assert T.write_data_files(tbl, data) == []
    data = pa.table({"id": pa.array([7, 3, 9], pa.int64()), "v": ["a", None, "c"], "seq": pa.array([1, 1, 1], pa.int64())})
    [f] = T.write_data_files(tbl, data)
    key = tbl.schema().find_field("id")
    assert f.record_count == 3 and len(f.partition) == 0 and f.file_path.endswith(".parquet")
    assert from_bytes(key.field_type, f.lower_bounds[key.field_id]) == 3
    assert from_bytes(key.field_type, f.upper_bounds[key.field_id]) == 9
    assert f.null_value_counts[tbl.schema().find_field("v").field_id] == 1
    meta = pq.read_schema(tbl.io.new_input(f.file_path).open())
    assert [int(fld.metadata[b"PARQUET:field_id"]) for fld in meta] == [fl.field_id for fl in tbl.schema().fields]
    T.commit_files(catalog, "silver.t", [f], run_id="w")
    assert sorted(rows(catalog.load_table("silver.t"))) == [3, 7, 9]
    with tbl.transaction() as tx:
        tx.set_properties(**{"write.target-file-size-bytes": "1"})
    files = T.write_data_files(catalog.load_table("silver.t"), data)
    assert [x.record_count for x in files] == [1, 1, 1]
