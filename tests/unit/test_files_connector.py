"""Files connector on local temp files (and fsspec's in-memory filesystem): no network."""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eai_ray.config import FileSource
from eai_ray.errors import ConfigError, SourceNotFound
from eai_ray.ingestion.base import POSITION_COLUMN, RAW_COLUMN, Connector, SupportsPartitioning, merge_checkpoints
from eai_ray.ingestion.files import ERROR_COLUMN, FileConnector


def connector(path, pattern, **res) -> FileConnector:
    return FileConnector(FileSource.model_validate({
        "kind": "files", "name": "f", "path": str(path),
        "resources": [{"name": "r", "pattern": pattern, **res}],
    }))


def read(conn, checkpoint=None, batch_rows=1000):
    batches = list(conn.read("r", checkpoint=checkpoint, batch_rows=batch_rows))
    tables = [b.table for b in batches if b.table.num_rows]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    cp = checkpoint
    for b in batches:
        cp = merge_checkpoints(cp, b.checkpoint)
    return table, cp, batches


# --------------------------------------------------------------------------- CSV
def test_csv_reads_every_column_as_text_with_position_and_raw(tmp_path):
    (tmp_path / "a.csv").write_text("id,amount,when\n1,12.50,2024-01-05\n2, 3.00 ,\n")
    conn = connector(tmp_path, "*.csv")
    assert isinstance(conn, Connector) and isinstance(conn, SupportsPartitioning)
    conn.check()
    t, _, _ = read(conn)
    assert t.schema.field("id").type == pa.string()
    assert t.to_pylist() == [
        {"id": "1", "amount": "12.50", "when": "2024-01-05", POSITION_COLUMN: "a.csv:2", RAW_COLUMN: "1,12.50,2024-01-05",
         ERROR_COLUMN: None},
        {"id": "2", "amount": " 3.00 ", "when": "", POSITION_COLUMN: "a.csv:3", RAW_COLUMN: "2, 3.00 ,",
         ERROR_COLUMN: None},
    ]


def test_ragged_csv_rows_are_kept_with_their_raw_line(tmp_path):
    (tmp_path / "a.csv").write_text("id,name\n1,a\n2,b,surplus\n3\n\n4,d\n")
    t, _, _ = read(connector(tmp_path, "*.csv"))
    rows = t.to_pylist()
    assert [r["id"] for r in rows] == ["1", None, None, "4"]
    assert [r[RAW_COLUMN] for r in rows] == ["1,a", "2,b,surplus", "3", "4,d"]
    assert [r[POSITION_COLUMN] for r in rows] == ["a.csv:2", "a.csv:3", "a.csv:4", "a.csv:6"]
    assert rows[1][ERROR_COLUMN] == "ragged row: expected 2 fields, got 3"
    assert rows[2][ERROR_COLUMN] == "ragged row: expected 2 fields, got 1"
    assert rows[0][ERROR_COLUMN] is None and rows[3][ERROR_COLUMN] is None


def test_invalid_utf8_keeps_the_original_bytes_and_is_flagged(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"id,name\n1,caf\xc3\xa9\n2,bad\xff\xfe\n3,ok\n")
    t, _, _ = read(connector(tmp_path, "*.csv"))
    rows = t.to_pylist()
    assert [r["name"] for r in rows] == ["café", None, "ok"]  # never a U+FFFD replacement
    assert rows[1]["id"] == "2"
    assert rows[1][RAW_COLUMN] == "base64:" + base64.b64encode(b"2,bad\xff\xfe").decode()
    assert rows[1][ERROR_COLUMN] == ("type:name: value 'bad\\xff\\xfe' is not valid utf-8: byte(s) ff at byte "
                                     "offset 21; the original record bytes are in _eai_raw (base64)")
    assert rows[0][ERROR_COLUMN] is None and rows[2][ERROR_COLUMN] is None


def test_quoted_fields_spanning_lines_and_stray_quotes(tmp_path):
    (tmp_path / "a.csv").write_text('id,note\r\n1,"two\r\nlines"\r\n2,"say ""hi"""\r\n3,5" pipe\r\n4,x\r\n')
    t, _, _ = read(connector(tmp_path, "*.csv"))
    rows = t.to_pylist()
    assert [r["note"] for r in rows] == ["two\r\nlines", 'say "hi"', '5" pipe', "x"]  # quoted CRLF kept
    assert [r[POSITION_COLUMN] for r in rows] == ["a.csv:2", "a.csv:4", "a.csv:5", "a.csv:6"]
    assert rows[0][RAW_COLUMN] == '1,"two\r\nlines"'


def test_csv_delimiter_encoding_and_odd_headers(tmp_path):
    (tmp_path / "a.csv").write_bytes("id;name;name;\n1;é;x;y\n".encode("latin-1"))
    t, _, _ = read(connector(tmp_path, "*.csv", delimiter=";", encoding="latin-1"))
    assert t.column_names[:4] == ["id", "name", "name_2", "column_4"]
    assert t.column("name").to_pylist() == ["é"]


def test_header_only_and_empty_csv(tmp_path):
    (tmp_path / "a.csv").write_text("id,name\n")
    (tmp_path / "b.csv").write_text("")
    t, cp, batches = read(connector(tmp_path, "*.csv"))
    assert t.num_rows == 0
    assert set(cp["files"]) == {"a.csv", "b.csv"}


def test_discover_infers_types_of_csv_text(tmp_path):
    (tmp_path / "a.csv").write_text("id,price,seen,flag\n" + "".join(
        f"{i},{i}.50,2024-01-0{i % 9 + 1}T10:00:00Z,{'yes' if i % 2 else 'no'}\n" for i in range(1, 50)))
    schema = connector(tmp_path, "*.csv", primary_key=["id"]).discover("r")
    types = {c.name: c.type for c in schema.columns}
    assert types == {"id": pa.int64(), "price": pa.decimal128(18, 2), "seen": pa.timestamp("us", tz="UTC"),
                     "flag": pa.bool_()}
    assert schema.primary_key == ["id"]
    assert [c.primary_key for c in schema.columns] == [True, False, False, False]
    assert schema.columns[0].evidence == "49/49 sampled values parsed as int64"


# --------------------------------------------------------------------------- JSON
def test_json_type_change_between_records_becomes_json_text(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": 1, "v": 1}\n{"id": 2, "v": "one"}\n{"id": 3, "v": [1]}\n')
    t, _, _ = read(connector(tmp_path, "*.jsonl"))
    assert t.schema.field("id").type == pa.int64()
    assert t.column("v").to_pylist() == ["1", '"one"', "[1]"]


def test_nested_json_becomes_structs_and_lists(tmp_path):
    records = [{"id": 1, "address": {"city": "Oslo", "geo": {"lat": 59.9}}, "tags": ["a", "b"]},
               {"id": 2, "address": {"city": "Rome"}, "tags": []}]
    (tmp_path / "a.json").write_text(json.dumps(records))
    t, _, _ = read(connector(tmp_path, "*.json"))
    assert pa.types.is_struct(t.schema.field("address").type)
    assert t.schema.field("tags").type == pa.list_(pa.string())
    assert t.column("address").to_pylist()[0] == {"city": "Oslo", "geo": {"lat": 59.9}}
    assert t.column(POSITION_COLUMN).to_pylist() == ["a.json:1", "a.json:2"]
    assert json.loads(t.column(RAW_COLUMN)[1].as_py()) == records[1]
    schema = connector(tmp_path, "*.json").discover("r")
    address = next(c for c in schema.columns if c.name == "address")
    assert pa.types.is_struct(address.type) and address.confidence == 1.0


def test_malformed_jsonl_line_keeps_only_its_raw_text(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": 1}\n{"id": 2,,}\n\n[3]\n{"id": 4}\n')
    t, _, _ = read(connector(tmp_path, "*.jsonl"))
    rows = t.to_pylist()
    assert [r["id"] for r in rows] == [1, None, None, 4]
    assert [r[RAW_COLUMN] for r in rows] == ['{"id": 1}', '{"id": 2,,}', "[3]", '{"id": 4}']
    assert [r[POSITION_COLUMN] for r in rows] == ["a.jsonl:1", "a.jsonl:2", "a.jsonl:4", "a.jsonl:5"]
    assert rows[1][ERROR_COLUMN].startswith("malformed JSON line")
    assert rows[2][ERROR_COLUMN] == "not a JSON object"


def test_json_format_reads_json_lines_too(tmp_path):
    (tmp_path / "a.json").write_text('{"id": 1}\n{"id": 2}\n')
    t, _, _ = read(connector(tmp_path, "*.json"))
    assert t.column("id").to_pylist() == [1, 2]


# --------------------------------------------------------------------------- Parquet
def test_parquet_is_read_typed_in_batches(tmp_path):
    ts = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    pq.write_table(pa.table({"id": list(range(10)), "at": [ts] * 10}), tmp_path / "a.parquet")
    conn = connector(tmp_path, "*.parquet")
    t, cp, batches = read(conn, batch_rows=4)
    assert [b.table.num_rows for b in batches] == [4, 4, 2]
    assert [b.checkpoint is not None for b in batches] == [False, False, True]
    assert t.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert t.column(POSITION_COLUMN).to_pylist()[:2] == ["a.parquet:1", "a.parquet:2"]
    assert RAW_COLUMN not in t.column_names
    schema = conn.discover("r")
    assert schema.row_estimate == 10
    assert [c.type for c in schema.columns] == [pa.int64(), pa.timestamp("us", tz="UTC")]


# --------------------------------------------------------------------------- incremental, listing, errors
def test_checkpoint_skips_unchanged_files_and_rereads_changed_ones(tmp_path):
    (tmp_path / "a.csv").write_text("id\n1\n")
    (tmp_path / "b.csv").write_text("id\n2\n")
    conn = connector(tmp_path, "*.csv")
    t, cp, _ = read(conn)
    assert sorted(t.column("id").to_pylist()) == ["1", "2"]
    assert read(conn, cp)[0].num_rows == 0
    (tmp_path / "b.csv").write_text("id\n2\n3\n")
    os.utime(tmp_path / "b.csv", (1_900_000_000, 1_900_000_000))
    t, cp2, _ = read(conn, cp)
    assert t.column("id").to_pylist() == ["2", "3"]
    assert cp2["files"]["b.csv"]["mtime"] == 1_900_000_000 and cp2["files"]["a.csv"] == cp["files"]["a.csv"]
    assert cp2["files"]["b.csv"]["size"] == 7 and cp2["files"]["b.csv"]["fingerprint"].startswith("blake2b:")


def test_rewritten_file_with_the_same_bytes_is_not_read_again(tmp_path):
    (tmp_path / "a.csv").write_text("id\n1\n")
    conn = connector(tmp_path, "*.csv")
    _, cp, _ = read(conn)
    (tmp_path / "a.csv").write_text("id\n1\n")  # regenerated: new mtime, same content
    os.utime(tmp_path / "a.csv", (1_900_000_000, 1_900_000_000))
    assert read(conn, cp)[0].num_rows == 0
    assert conn.plan("r", checkpoint=cp, parallelism=2, batch_rows=10) == []
    (tmp_path / "a.csv").write_text("id\n2\n")  # same size, other bytes
    os.utime(tmp_path / "a.csv", (1_900_000_100, 1_900_000_100))
    assert read(conn, cp)[0].column("id").to_pylist() == ["2"]


def test_old_checkpoints_with_a_bare_mtime_still_read(tmp_path):
    (tmp_path / "a.csv").write_text("id\n1\n")
    conn = connector(tmp_path, "*.csv")
    _, cp, _ = read(conn)
    old = {"files": {"a.csv": cp["files"]["a.csv"]["mtime"]}}
    assert read(conn, old)[0].num_rows == 0
    merged = merge_checkpoints(old, {"files": {"b.csv": cp["files"]["a.csv"]}})
    assert set(merged["files"]) == {"a.csv", "b.csv"}


def test_checkpoint_rides_on_the_last_batch_of_each_file(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(5)))
    _, _, batches = read(connector(tmp_path, "*.jsonl"), batch_rows=2)
    assert [b.table.num_rows for b in batches] == [2, 2, 1]
    assert [b.checkpoint for b in batches[:2]] == [None, None]
    assert list(batches[-1].checkpoint["files"]) == ["a.jsonl"]


def test_plan_splits_files_into_disjoint_partitions(tmp_path):
    for i in range(5):
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / f"p{i}.csv").write_text(f"id\n{i}\n")
    conn = connector(tmp_path, "sub/*.csv")
    parts = conn.plan("r", checkpoint=None, parallelism=2, batch_rows=10)
    assert len(parts) == 2
    ids = [v for p in parts for b in conn.read("r", partition=p) for v in b.table.column("id").to_pylist()]
    assert sorted(ids) == ["0", "1", "2", "3", "4"]
    assert parts[0].predicate["files"][0] == "sub/p0.csv"
    assert conn.plan("r", checkpoint=None, parallelism=1, batch_rows=10) == []


def test_missing_folder_and_no_match_are_source_not_found(tmp_path):
    with pytest.raises(SourceNotFound, match="does not exist"):
        connector(tmp_path / "missing", "*.csv").check()
    with pytest.raises(SourceNotFound, match="does not exist"):
        list(connector(tmp_path / "missing", "*.csv").read("r"))
    with pytest.raises(SourceNotFound, match=r"no file matches '\*.csv'"):
        list(connector(tmp_path, "*.csv").read("r"))
    with pytest.raises(SourceNotFound, match="no resource 'other'"):
        connector(tmp_path, "*.csv").discover("other")


def test_unknown_extension_is_sniffed_from_the_content(tmp_path):
    (tmp_path / "a.dat").write_text("x;y\n1;2\n")
    (tmp_path / "b.log").write_text('{"id": 1}\n{"id": 2}\n')
    (tmp_path / "c.bin").write_bytes(bytes(range(256)) * 4)
    t, _, _ = read(connector(tmp_path, "a.dat"))
    assert t.column_names[:2] == ["x", "y"]
    t, _, _ = read(connector(tmp_path, "b.log"))
    assert t.column("id").to_pylist() == [1, 2]
    assert connector(tmp_path, "b.log").discover("r").format_info["format"]["value"] == "jsonl"
    with pytest.raises(ConfigError, match="cannot tell the format"):
        list(connector(tmp_path, "c.bin").read("r"))
    t, _, _ = read(connector(tmp_path, "a.dat", format="csv", delimiter=","))
    assert t.column_names[0] == "x;y"  # explicit config wins over the sniff


def test_compressed_files_and_fsspec_uris(tmp_path):
    import gzip

    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"id\n7\n"))
    t, _, _ = read(connector(tmp_path, "*.csv.gz"))
    assert t.column("id").to_pylist() == ["7"]
    root = f"memory://eai-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/in/a.jsonl", b'{"id": 1}\n')
    try:
        t, cp, _ = read(connector(root, "in/*.jsonl"))
        assert t.column(POSITION_COLUMN).to_pylist() == ["in/a.jsonl:1"]
        assert list(cp["files"]) == ["in/a.jsonl"]
    finally:
        fs.rm(root, recursive=True)


# --------------------------------------------------------------------------- sniffing through the connector
def test_defaults_sniff_bom_semicolon_and_keep_quoted_crlf(tmp_path):
    (tmp_path / "a.csv").write_bytes(b'\xef\xbb\xbfid;note\r\n1;"x\r\ny"\r\n2;"a;b"\r\n')
    conn = connector(tmp_path, "*.csv")
    t, _, _ = read(conn)
    assert t.column_names[:2] == ["id", "note"]
    assert t.column("note").to_pylist() == ["x\r\ny", "a;b"]
    info = conn.discover("r").format_info
    assert info["delimiter"]["value"] == ";" and info["encoding"]["value"] == "utf-8"
    assert set(info["files"]) == {"a.csv"}


def test_explicit_header_and_quoting_settings(tmp_path):
    (tmp_path / "a.csv").write_text('1,"a\n2,b"\n')
    t, _, _ = read(connector(tmp_path, "*.csv", header=False, quotechar="none"))
    assert t.column_names[:2] == ["column_1", "column_2"]
    assert t.column("column_2").to_pylist() == ['"a', 'b"']


def test_config_validates_delimiter_quotechar_and_encoding(tmp_path):
    assert connector(tmp_path, "*.csv", delimiter="tab").source.resources[0].delimiter == "\t"
    for bad in ({"delimiter": ";;"}, {"quotechar": "ab"}, {"encoding": "no-such-codec"}):
        with pytest.raises(Exception, match="expected|unknown encoding"):
            connector(tmp_path, "*.csv", **bad)


def test_corrupt_archive_is_one_flagged_row_not_a_failed_table(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "b.csv.gz").write_bytes(__import__("gzip").compress(b"id\n1\n"))
    t, cp, _ = read(connector(tmp_path, "*.csv.gz"))
    rows = t.to_pylist()
    assert rows[0][ERROR_COLUMN].startswith("file: cannot decompress gzip") and rows[0][POSITION_COLUMN] == "a.csv.gz:0"
    assert rows[1]["id"] == "1" and set(cp["files"]) == {"a.csv.gz", "b.csv.gz"}


def test_undecodable_header_names_keep_their_bytes(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"id,caf\xe9\n1,x\xc3\xa9\n")  # UTF-8 body, one Latin-1 header byte
    t, _, _ = read(connector(tmp_path, "*.csv"))
    assert t.column_names[:2] == ["id", "caf\\xe9"]
    assert t.column("caf\\xe9").to_pylist() == ["xé"]


def test_parquet_nanoseconds_and_zones_per_value(tmp_path):
    at = pa.array([1_000, 1_500, None], pa.timestamp("ns", tz="Asia/Tokyo"))
    pq.write_table(pa.table({"id": [1, 2, 3], "at": at}), tmp_path / "a.parquet")
    t, _, _ = read(connector(tmp_path, "*.parquet"))
    assert t.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert t.column("at").to_pylist()[0] == dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc)
    assert t.column("at").to_pylist()[1:] == [None, None]
    assert t.column(ERROR_COLUMN).to_pylist() == [
        None, "type:at: value '1970-01-01T00:00:00.000001500Z' has nanosecond precision that timestamp[us] "
              "would lose", None]


def test_parquet_int96_timestamps_do_not_wrap_and_keep_their_digits(tmp_path):
    old = pa.array([dt.datetime(1500, 1, 1), dt.datetime(2020, 1, 1, 0, 0, 0, 123456)], pa.timestamp("us"))
    nanos = pa.array([1_577_836_800_123_456_789], pa.timestamp("ns"))
    pq.write_table(pa.table({"t": pa.concat_arrays([old.cast(pa.timestamp("ns"), safe=False)[1:], nanos])}),
                   tmp_path / "b.parquet", use_deprecated_int96_timestamps=True)
    pq.write_table(pa.table({"t": old}), tmp_path / "a.parquet", use_deprecated_int96_timestamps=True)
    t, _, _ = read(connector(tmp_path, "*.parquet"))
    assert t.column("t").to_pylist() == [dt.datetime(1500, 1, 1), dt.datetime(2020, 1, 1, 0, 0, 0, 123456),
                                         dt.datetime(2020, 1, 1, 0, 0, 0, 123456), None]
    assert t.column(ERROR_COLUMN).to_pylist()[3].startswith(
        "type:t: value '2020-01-01T00:00:00.123456789' has nanosecond precision")


def test_a_corrupt_compressed_file_is_discovered_and_read_as_one_error_row(tmp_path):
    """gzip magic with a broken body: discovery answers (it crashed closing a plain iterator) and
    the read lands one row that says why, so nothing is silently dropped."""
    (tmp_path / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 20)
    conn = connector(tmp_path, "*.csv.gz")
    conn.discover("r")
    table, _, _ = read(conn)
    assert table.num_rows == 1
    assert "cannot decompress" in table.column(ERROR_COLUMN)[0].as_py()
