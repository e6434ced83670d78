"""A folder of awkward files, read with default settings: every good record lands with the values
written, every bad one is flagged with a reason, bronze keeps the original bytes.

The files are generated here (BOM + ';' + quoted CRLF, UTF-16 with a BOM, Latin-1, invalid UTF-8,
gzip without an extension, header-only, empty, JSON lines with a drifting type and a malformed line,
Parquet with nanosecond and zoned timestamps and nested lists of structs). Checks compare values
(checksums of the text columns against what was written), not only counts.
"""
from __future__ import annotations

import base64
import codecs
import datetime as dt
import gzip
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eai_ray.config import FileSource, parse_pipeline
from eai_ray.ingestion.base import ERROR_COLUMN, POSITION_COLUMN, RAW_COLUMN, merge_checkpoints
from eai_ray.ingestion.files import FileConnector

pytestmark = pytest.mark.integration

PEOPLE = [("1", "Zoë Ångström", "likes \"quotes\"; and semicolons"),
          ("2", "Renée O'Hara", "two\r\nlines, kept as CRLF"),
          ("3", "Łukasz Żółć", ""),
          ("4", "東京 太郎", "tab\there")]
CITIES = [("1", "Genève", "Suisse"), ("2", "Málaga", "España"), ("3", "Zürich", "Schweiz"),
          ("4", "Ærøskøbing", "Danmark")]
UTC = dt.timezone.utc


def csv_text(rows, delimiter: str, header: list[str], newline: str = "\r\n") -> str:
    def field(v: str) -> str:
        if any(c in v for c in (delimiter, '"', "\r", "\n")):
            return '"' + v.replace('"', '""') + '"'
        return v
    return "".join(delimiter.join(field(v) for v in r) + newline for r in [header, *rows])


def checksum(rows) -> str:
    return hashlib.sha256(json.dumps(sorted(rows), ensure_ascii=False).encode()).hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("awkward")
    (d / "bom_semicolon.csv").write_bytes(codecs.BOM_UTF8 + csv_text(PEOPLE, ";", ["id", "name", "note"]).encode())
    (d / "export_utf16.csv").write_bytes(csv_text(PEOPLE, "\t", ["id", "name", "note"]).encode("utf-16"))
    (d / "latin1.csv").write_bytes(csv_text(CITIES, ",", ["id", "city", "country"], "\n").encode("latin-1"))
    (d / "broken_utf8.csv").write_bytes(
        b"id,name,amount\n1,caf\xc3\xa9,1.50\n2,bad\xff\xfebytes,2.00\n3,\"multi\nline \x80 x\",3.00\n4,ok,4.00\n")
    (d / "export").write_bytes(gzip.compress(csv_text(CITIES, "|", ["id", "city", "country"]).encode()))
    (d / "really_gzip.csv").write_bytes(gzip.compress(csv_text(CITIES, ",", ["id", "city", "country"]).encode()))
    (d / "header_only.csv").write_text("id,name\r\n")
    (d / "empty.csv").write_bytes(b"")
    (d / "events.jsonl").write_text(
        '{"id": 1, "v": 1, "tag": null}\n{"id": 2, "v": "two"}\n{"id": 3, "v": [3]}\n{"id": 4,, "v": 4}\n'
        '{"id": 5, "v": {"x": 5}, "tag": "t"}\n')
    ns = [1_700_000_000_000_000_000, 1_700_000_000_000_000_123, None, 1_700_000_000_123_456_000]
    items = [[{"sku": "a", "at": dt.datetime(2024, 1, 1, 12, tzinfo=UTC), "qty": 1}, {"sku": "b", "at": None,
                                                                                     "qty": None}],
             None, [], [{"sku": "c", "at": dt.datetime(2024, 2, 1, tzinfo=UTC), "qty": 3}]]
    item_type = pa.list_(pa.struct([("sku", pa.string()), ("at", pa.timestamp("ns", tz="America/New_York")),
                                    ("qty", pa.int64())]))
    pq.write_table(pa.table({
        "id": pa.array([1, 2, 3, 4]),
        "seen_ns": pa.array(ns, pa.timestamp("ns")),
        "seen_oslo": pa.array([dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)] * 4, pa.timestamp("us", tz="Europe/Oslo")),
        "items": pa.array(items, item_type),
    }), d / "orders.parquet")
    return d


def connector(folder: Path, pattern: str, **options) -> FileConnector:
    return FileConnector(FileSource.model_validate({
        "kind": "files", "name": "drop", "path": str(folder),
        "resources": [{"name": "r", "pattern": pattern, **options}]}))


def read(conn: FileConnector):
    batches = list(conn.read("r"))
    tables = [b.table for b in batches if b.table.num_rows]
    cp = None
    for b in batches:
        cp = merge_checkpoints(cp, b.checkpoint)
    return (pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})), cp


def data_rows(table: pa.Table, columns: list[str]) -> list[list[str]]:
    return [[r[c] for c in columns] for r in table.to_pylist()]


# --------------------------------------------------------------------------- CSV
def test_bom_semicolon_and_quoted_crlf_land_the_right_columns(folder):
    conn = connector(folder, "bom_semicolon.csv")
    t, _ = read(conn)
    assert t.column_names[:3] == ["id", "name", "note"]  # not one column named after the header line
    assert checksum(data_rows(t, ["id", "name", "note"])) == checksum([list(r) for r in PEOPLE])
    crlf = t.column("note").to_pylist()[1]
    assert crlf == "two\r\nlines, kept as CRLF"  # byte for byte
    assert t.column(ERROR_COLUMN).null_count == t.num_rows
    assert t.column(RAW_COLUMN).to_pylist()[1] == '2;Renée O\'Hara;"two\r\nlines, kept as CRLF"'
    info = conn.discover("r").format_info
    assert info["encoding"]["value"] == "utf-8" and "byte order mark" in info["encoding"]["evidence"]
    assert info["delimiter"]["value"] == ";" and info["delimiter"]["confidence"] >= 0.9
    assert info["header"]["value"] is True and info["columns"] == 3


def test_utf16_with_bom(folder):
    conn = connector(folder, "export_utf16.csv")
    t, _ = read(conn)
    assert "\x00" not in "".join(str(v) for v in t.column("name").to_pylist())
    assert checksum(data_rows(t, ["id", "name", "note"])) == checksum([list(r) for r in PEOPLE])
    info = conn.discover("r").format_info
    assert (info["encoding"]["value"], info["delimiter"]["value"]) == ("utf-16-le", "\t")


def test_latin1_is_decoded_not_quarantined(folder):
    conn = connector(folder, "latin1.csv")
    t, _ = read(conn)
    assert t.column(ERROR_COLUMN).null_count == t.num_rows
    assert checksum(data_rows(t, ["id", "city", "country"])) == checksum([list(r) for r in CITIES])
    assert t.column("city").to_pylist()[0] == "Genève"
    assert conn.discover("r").format_info["encoding"]["value"] in ("latin-1", "cp1252")


def test_invalid_utf8_rows_keep_their_original_bytes(folder):
    t, _ = read(connector(folder, "broken_utf8.csv"))
    rows = t.to_pylist()
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["name"] for r in rows] == ["café", None, None, "ok"]
    assert [r["amount"] for r in rows] == ["1.50", "2.00", "3.00", "4.00"]  # undamaged columns keep values
    assert not any("\ufffd" in str(v) for r in rows for v in r.values())  # never a replacement character
    source = (folder / "broken_utf8.csv").read_bytes()
    assert base64.b64decode(rows[1][RAW_COLUMN].removeprefix("base64:")) == b"2,bad\xff\xfebytes,2.00"
    assert base64.b64decode(rows[2][RAW_COLUMN].removeprefix("base64:")) == b'3,"multi\nline \x80 x",3.00'
    assert rows[1][ERROR_COLUMN].startswith("type:name: value 'bad\\xff\\xfebytes' is not valid utf-8")
    ff, x80 = source.index(b"\xff"), source.index(b"\x80")
    assert f"byte offset {ff}" in rows[1][ERROR_COLUMN] and f"byte offset {x80}" in rows[2][ERROR_COLUMN]
    assert rows[0][ERROR_COLUMN] is None and rows[3][ERROR_COLUMN] is None
    assert rows[0][RAW_COLUMN] == "1,café,1.50"


def test_gzip_without_extension_and_csv_that_is_gzip(folder):
    for pattern in ("export", "really_gzip.csv"):
        conn = connector(folder, pattern)
        t, _ = read(conn)
        assert checksum(data_rows(t, ["id", "city", "country"])) == checksum([list(r) for r in CITIES]), pattern
        info = conn.discover("r").format_info
        assert info["compression"]["value"] == "gzip" and info["format"]["value"] == "csv"
    assert connector(folder, "export").discover("r").format_info["delimiter"]["value"] == "|"


def test_header_only_and_empty_files_land_zero_rows_and_say_so(folder):
    for pattern, note in (("header_only.csv", "header only"), ("empty.csv", "empty file")):
        conn = connector(folder, pattern)
        t, cp = read(conn)
        assert t.num_rows == 0 and list(cp["files"]) == [pattern]
        schema = conn.discover("r")
        assert any(note in n for n in schema.format_info["notes"]), schema.format_info
    assert [c.name for c in connector(folder, "header_only.csv").discover("r").columns] == ["id", "name"]
    assert connector(folder, "empty.csv").discover("r").columns == []


# --------------------------------------------------------------------------- JSON lines
def test_jsonl_drift_malformed_line_and_null_versus_missing(folder):
    t, _ = read(connector(folder, "events.jsonl"))
    rows = t.to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3, None, 5]
    assert [r["v"] for r in rows] == ["1", '"two"', "[3]", None, '{"x": 5}']  # a drifting type becomes JSON text
    assert rows[3][ERROR_COLUMN].startswith("malformed JSON line") and rows[3][RAW_COLUMN] == '{"id": 4,, "v": 4}'
    # bronze keeps null and missing apart in the original text; the typed column flattens both to NULL
    assert json.loads(rows[0][RAW_COLUMN]) == {"id": 1, "v": 1, "tag": None}
    assert "tag" not in json.loads(rows[1][RAW_COLUMN])
    assert rows[0]["tag"] is None and rows[1]["tag"] is None and rows[4]["tag"] == "t"


# --------------------------------------------------------------------------- Parquet
def test_parquet_ns_zoned_and_nested_timestamps(folder):
    conn = connector(folder, "orders.parquet")
    t, _ = read(conn)
    assert t.schema.field("seen_ns").type == pa.timestamp("us")
    assert t.schema.field("seen_oslo").type == pa.timestamp("us", tz="UTC")
    assert t.schema.field("items").type.value_type.field("at").type == pa.timestamp("us", tz="UTC")
    rows = t.to_pylist()
    assert rows[0]["seen_ns"] == dt.datetime(2023, 11, 14, 22, 13, 20)
    assert rows[3]["seen_ns"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123456)  # whole microseconds: kept
    assert rows[1]["seen_ns"] is None  # 123 ns would be lost: the value goes null, the row stays
    assert rows[1][ERROR_COLUMN] == ("type:seen_ns: value '2023-11-14T22:13:20.000000123' has nanosecond "
                                     "precision that timestamp[us] would lose")
    assert rows[1]["id"] == 2 and rows[1]["seen_oslo"] == dt.datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert [r[ERROR_COLUMN] for r in rows if r["id"] != 2] == [None, None, None]
    assert all(r["seen_oslo"] == dt.datetime(2024, 6, 1, 12, tzinfo=UTC) for r in rows)
    assert rows[0]["items"][0] == {"sku": "a", "at": dt.datetime(2024, 1, 1, 12, tzinfo=UTC), "qty": 1}
    assert rows[0]["items"][1] == {"sku": "b", "at": None, "qty": None}
    assert rows[1]["items"] is None and rows[2]["items"] == []  # NULL lists stay NULL, empty ones empty
    assert [r[POSITION_COLUMN] for r in rows] == [f"orders.parquet:{i}" for i in range(1, 5)]
    schema = conn.discover("r")
    assert {c.name: c.type for c in schema.columns}["seen_oslo"] == pa.timestamp("us", tz="UTC")


# --------------------------------------------------------------------------- re-reads and a whole run
def test_regenerated_files_with_the_same_bytes_are_skipped(folder, tmp_path):
    for f in ("bom_semicolon.csv", "orders.parquet", "events.jsonl"):
        (tmp_path / f).write_bytes((folder / f).read_bytes())
    conn = connector(tmp_path, "*.*")  # one resource of mixed formats: count per batch
    cp = None
    rows = 0
    for batch in conn.read("r"):
        rows += batch.table.num_rows
        cp = merge_checkpoints(cp, batch.checkpoint)
    assert rows == 4 + 4 + 5 and len(cp["files"]) == 3
    for f in ("bom_semicolon.csv", "orders.parquet", "events.jsonl"):  # the demo regenerates its files
        (tmp_path / f).write_bytes((folder / f).read_bytes())
        os.utime(tmp_path / f, (1_900_000_000, 1_900_000_000))
    assert list(conn.read("r", checkpoint=cp)) == []
    assert conn.plan("r", checkpoint=cp, parallelism=4, batch_rows=100) == []
    (tmp_path / "events.jsonl").write_text('{"id": 6}\n')
    batches = list(conn.read("r", checkpoint=cp))
    assert [b.table.column("id").to_pylist() for b in batches] == [[6]]


def test_pipeline_run_lands_good_rows_quarantines_bad_ones_and_reruns_land_nothing(folder, tmp_path):
    from eai_ray.orchestration.executor import LocalExecutor
    from eai_ray.orchestration.runner import PipelineRunner
    from eai_ray.storage.catalog import open_catalog

    src = tmp_path / "src"
    src.mkdir()
    names = ("bom_semicolon.csv", "broken_utf8.csv", "latin1.csv", "header_only.csv", "events.jsonl")
    for f in names:
        (src / f).write_bytes((folder / f).read_bytes())
    pq.write_table(pq.read_table(folder / "orders.parquet").drop_columns(["items"]), src / "orders.parquet")
    cfg = parse_pipeline({
        "name": "awkward", "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "files", "name": "drop", "path": str(src), "resources": [
            {"name": "people", "pattern": "bom_semicolon.csv", "primary_key": ["id"]},
            {"name": "broken", "pattern": "broken_utf8.csv", "primary_key": ["id"]},
            {"name": "cities", "pattern": "latin1.csv", "primary_key": ["id"]},
            {"name": "nothing", "pattern": "header_only.csv"},
            {"name": "events", "pattern": "events.jsonl"},
            {"name": "orders", "pattern": "orders.parquet", "primary_key": ["id"]}]}],
    })
    summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    by = {t.source: t for t in summary.tables}
    assert {s: t.status for s, t in by.items()} == {f"drop.{n}": "ok" for n in
                                                     ("people", "broken", "cities", "nothing", "events", "orders")}
    assert {s: t.bronze_rows for s, t in by.items()} == {
        "drop.people": 4, "drop.broken": 4, "drop.cities": 4, "drop.nothing": 0, "drop.events": 5,
        "drop.orders": 4}
    catalog = open_catalog(cfg)
    bronze = catalog.load_table("bronze.drop_broken").scan().to_arrow().to_pylist()
    raw = {r["id"]: r[RAW_COLUMN] for r in bronze}
    assert base64.b64decode(raw["2"].removeprefix("base64:")) == b"2,bad\xff\xfebytes,2.00"
    assert by["drop.broken"].quarantined == 2 and by["drop.orders"].quarantined == 1
    assert "type:name" in by["drop.broken"].quarantine_reasons
    assert "type:seen_ns" in by["drop.orders"].quarantine_reasons
    people = catalog.load_table("silver.drop_people").scan().to_arrow()
    assert sorted(people.column("note").to_pylist()) == sorted(r[2] for r in PEOPLE)
    cities = catalog.load_table("silver.drop_cities").scan().to_arrow()
    assert sorted(cities.column("city").to_pylist()) == sorted(r[1] for r in CITIES)

    for f in src.iterdir():  # regenerate every file with the same bytes: nothing lands again
        f.write_bytes(f.read_bytes())
        os.utime(f, (1_900_000_000, 1_900_000_000))
    again = {t.source: t for t in PipelineRunner(cfg, executor=LocalExecutor()).run().tables}
    assert {s: t.bronze_rows for s, t in again.items()} == {s: 0 for s in by}
    assert catalog.load_table("bronze.drop_people").scan().to_arrow().num_rows == 4


def test_rows_read_in_parallel_keep_their_raw_bytes_and_errors(folder, tmp_path):
    """Files split over several extract tasks: the per-row metadata still reaches bronze and silver."""
    from eai_ray.orchestration.executor import LocalExecutor
    from eai_ray.orchestration.runner import PipelineRunner
    from eai_ray.storage.catalog import open_catalog

    class TwoWorkers(LocalExecutor):
        def parallelism(self) -> int:
            return 2

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"part{i}.csv").write_bytes((folder / "broken_utf8.csv").read_bytes().replace(b"\n1,", f"\n{i}1,".encode()))
    cfg = parse_pipeline({"name": "par", "state_dir": str(tmp_path / "state"),
                          "sources": [{"kind": "files", "name": "drop", "path": str(src),
                                       "resources": [{"name": "broken", "pattern": "part*.csv"}]}]})
    rep = PipelineRunner(cfg, executor=TwoWorkers()).run().tables[0]
    assert rep.status == "ok" and rep.bronze_rows == 12 and rep.reconciled
    assert rep.quarantined == 6 and "type:name" in rep.quarantine_reasons
    bronze = open_catalog(cfg).load_table("bronze.drop_broken").scan().to_arrow()
    assert sum(1 for r in bronze.column(RAW_COLUMN).to_pylist() if r and r.startswith("base64:")) == 6
    assert not [c for c in rep.schema_changes if c["column"].startswith("_eai_")]
