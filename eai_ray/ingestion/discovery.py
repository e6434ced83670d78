"""Schema discovery for schemaless sources (CSV, JSON, REST) and the coercion silver uses.

``infer_columns`` looks at a sample of an Arrow table and proposes a type per
column with a confidence (share of sampled non-null values that parse as that
type) and a line of evidence. ``coerce_column`` turns a column into a target
type, vectorized, and says which non-null values failed so the silver stage
can quarantine exactly those rows. ``records_to_table`` turns parsed JSON
records into Arrow (nested -> struct/list, type conflicts -> JSON text).

Example::

    import pyarrow as pa
    from eai_ray.ingestion.discovery import infer_columns
    from eai_ray.coerce import coerce_column
    t = pa.table({"qty": ["1", "2", "x"]})
    infer_columns(t)[0].type            # int64 would need 95% of values to parse
    values, failed = coerce_column(t["qty"], pa.int64())
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.coerce import (
    FIXED_RE,
    NUM_RE,
    UUID_RE,
    as_array,
    clean_text,
    coerce_column,
    is_nested,
    is_text,
    matches,
    parse_bool,
    parse_date,
    parse_decimal,
    parse_int,
    parse_timestamps,
)
from eai_ray.ingestion.base import ColumnInfo

__all__ = ["coerce_column", "infer_columns", "records_to_table", "CONFIDENCE"]

CONFIDENCE = 0.95  # a few bad values must not demote a column; silver quarantines them

# --------------------------------------------------------------------------- inference
def infer_columns(table: pa.Table, *, sample_rows: int = 10000) -> list[ColumnInfo]:
    """Propose a type per column from the first ``sample_rows`` rows.

    Text columns try bool, int64, decimal (fixed scale such as '12.50'),
    float64, date, timestamp / timestamptz, uuid (kept as string), in that
    order; the first with confidence >= 0.95 wins, else string. Typed and
    nested columns (JSON, Parquet) keep their Arrow type. Example::

        infer_columns(pa.table({"n": ["1", "2"]}))[0].type  # int64
    """
    sample = table.slice(0, sample_rows)
    return [_infer(name, as_array(sample.column(name))) for name in sample.column_names]


def _infer(name: str, arr: pa.Array) -> ColumnInfo:
    if pa.types.is_null(arr.type):
        return ColumnInfo(name, pa.string(), confidence=1.0,
                          evidence=f"all {len(arr)} sampled values were null; defaulted to string")
    if not is_text(arr.type):
        kind = "nested JSON value kept" if is_nested(arr.type) else "typed by the source"
        return ColumnInfo(name, arr.type, confidence=1.0, evidence=f"{kind} as {arr.type}")
    s = clean_text(arr)
    s = s.filter(pc.is_valid(s))
    n = len(s)
    if n == 0:
        return ColumnInfo(name, pa.string(), confidence=1.0,
                          evidence=f"all {len(arr)} sampled values were empty or null; defaulted to string")
    for label, dtype, ok in _candidates(s):
        good = pc.sum(pc.cast(ok, pa.int64())).as_py() or 0
        if good / n >= CONFIDENCE:
            return ColumnInfo(name, dtype, confidence=good / n,
                              evidence=f"{good}/{n} sampled values parsed as {label}")
    return ColumnInfo(name, pa.string(), confidence=1.0, evidence=f"{n}/{n} sampled values kept as string")


def _candidates(s: pa.Array) -> Iterable[tuple[str, pa.DataType, pa.Array]]:
    """(label, type, parsed-ok mask) per candidate, most specific first, computed lazily."""
    yield from _bool_candidate(s)
    yield "int64", pa.int64(), pc.is_valid(parse_int(s, pa.int64()))
    yield from _decimal_candidate(s)
    yield "float64", pa.float64(), matches(s, NUM_RE)
    yield "date", pa.date32(), pc.is_valid(parse_date(s, pa.date32()))
    yield from _timestamp_candidate(s)
    yield "uuid (kept as string)", pa.string(), matches(s, UUID_RE)


def _bool_candidate(s: pa.Array):
    ok = pc.is_valid(parse_bool(s, pa.bool_()))
    # a column of only 0/1 is more likely a number than a flag: int64 keeps it lossless
    worded = pc.any(pc.and_(ok, pc.invert(pc.is_in(s, value_set=pa.array(["0", "1"]))))).as_py()
    if worded:
        yield "bool", pa.bool_(), ok


def _decimal_candidate(s: pa.Array):
    """Decimal when every value with a point has the same scale (money: '12.50', '3.00')."""
    fixed = matches(s, FIXED_RE)
    pointed = s.filter(fixed)
    if len(pointed) == 0:
        return
    scales = pc.unique(pc.utf8_length(pc.extract_regex(pointed, r"\.(?P<f>\d+)$").field("f")))
    if len(scales) != 1:
        return
    scale = scales[0].as_py()
    int_digits = pc.max(pc.utf8_length(pc.replace_substring_regex(
        s.filter(matches(s, r"^[+-]?\d*(\.\d+)?$")), r"^[+-]?0*(\d*).*$", r"\1"))).as_py() or 1
    if int_digits + scale > 38:
        return
    precision = 18 if int_digits + scale <= 18 else 38
    dtype = pa.decimal128(precision, scale)
    yield f"decimal({precision},{scale})", dtype, pc.is_valid(parse_decimal(s, dtype))


def _timestamp_candidate(s: pa.Array):
    values, zoned = parse_timestamps(s)
    ok = pc.is_valid(values)
    if pc.any(pc.and_(ok, zoned)).as_py():
        yield "timestamptz (zones converted to UTC)", pa.timestamp("us", tz="UTC"), ok
    else:
        yield "timestamp", pa.timestamp("us"), ok


# --------------------------------------------------------------------------- JSON records
def records_to_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """Parsed JSON objects -> Arrow table: nested objects become structs, arrays lists.

    A field whose type differs between records (or does not fit Arrow, such as
    an int beyond int64) becomes a string column of JSON text for that field;
    fields missing from a record are null. Example::

        records_to_table([{"a": 1}, {"a": "x"}]).column("a")  # ['1', '"x"']
    """
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    columns = {name: _json_column([rec.get(name) for rec in records]) for name in names}
    if not columns:  # keep the row count even when no record has a field
        return pa.Table.from_struct_array(pa.array([{}] * len(records), pa.struct([])))
    return pa.table(columns)


def _json_column(values: list[Any]) -> pa.Array:
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _json_strings(values)
    if pa.types.is_null(arr.type):
        return pa.nulls(len(values), pa.string())
    if _unstorable(arr.type):
        return _json_strings(values)
    return arr


def _json_strings(values: list[Any]) -> pa.Array:
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())


def _unstorable(t: pa.DataType) -> bool:
    """Null or empty-struct types inside nested values: Parquet and Iceberg cannot hold them."""
    if pa.types.is_null(t):
        return True
    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_unstorable(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _unstorable(t.value_type)
    return False
