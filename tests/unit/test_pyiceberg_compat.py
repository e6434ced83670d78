"""Pins the pyiceberg behaviour eai_ray.storage.pyiceberg_compat changes: NULL lists of structs."""
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

from eai_ray.storage import tables as T


def test_null_list_of_structs_stays_null_at_rest(tmp_path):
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh",
                     init_catalog_tables="true")
    cat.create_namespace("bronze")
    items = pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64())]))
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                     "items": pa.array([None, [], [{"sku": "a", "qty": 1}, None]], items),
                     "tags": pa.array([None, ["x", None], []], pa.list_(pa.string()))})
    T.evolve(cat, "bronze.t", data.schema)
    T.append(cat, "bronze.t", data, run_id="r")
    back = {r["id"]: r for r in cat.load_table("bronze.t").scan().to_arrow().to_pylist()}
    assert back[1]["items"] is None and back[2]["items"] == []
    assert back[3]["items"] == [{"sku": "a", "qty": 1}, None]
    assert back[1]["tags"] is None and back[2]["tags"] == ["x", None] and back[3]["tags"] == []
    # the files written by tasks (write_data_files) go through the same visitor
    files = T.write_data_files(cat.load_table("bronze.t"), data)
    T.commit_files(cat, "bronze.t", files, run_id="r2")
    assert [r["items"] for r in cat.load_table("bronze.t").scan().to_arrow().to_pylist()].count(None) == 2
