"""Schema discovery for schemaless sources (CSV, JSON, REST) and the coercion silver uses.

``infer_columns`` looks at a sample of an Arrow table and proposes a type per
column with a confidence (share of sampled non-null values that parse as that
type) and a line of evidence. ``coerce_column`` turns a column into a target
type, vectorized, and says which non-null values failed so the silver stage
can quarantine exactly those rows. ``records_to_table`` turns parsed JSON
records into Arrow (nested -> struct/list, type conflicts -> JSON text).

Example::

    import pyarrow as pa
    from eai_ray.ingestion.discovery import infer_columns, coerce_column
    t = pa.table({"qty": ["1", "2", "x"]})
    infer_columns(t)[0].type            # int64 would need 95% of values to parse
    values, failed = coerce_column(t["qty"], pa.int64())
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.ingestion.base import ColumnInfo

CONFIDENCE = 0.95  # a few bad values must not demote a column; silver quarantines them

NULL_TOKENS = ["", "null", "none", "na", "n/a"]
TRUE_TOKENS = ["true", "t", "yes", "y", "1"]
FALSE_TOKENS = ["false", "f", "no", "n", "0"]

_INT_RE = r"^[+-]?\d{1,38}$"
_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:nan|inf|infinity)$"
_FIXED_RE = r"^[+-]?\d*\.\d+$"
_UUID_RE = r"^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$"
_DATE_RE = r"^(\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4})$"
# date, time, optional fraction and zone; the zone only counts after a time so '2024-01-05' is not '-05'
_TS_RE = (r"^(?P<body>(?:\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4})[T ]\s*\d{1,2}:\d{2}(?::\d{2})?)"
          r"(?P<frac>[.,]\d{1,9})?\s*(?P<tz>Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$")
_DATE_FORMATS = ["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y"]
_TS_FORMATS = [f"{d} {t}" for d in _DATE_FORMATS for t in ("%H:%M:%S", "%H:%M")]


# --------------------------------------------------------------------------- helpers
def _array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _clean(arr: pa.Array) -> pa.Array:
    """Trimmed text with the usual null spellings ('', 'NULL', 'N/A') turned into nulls."""
    s = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    is_null_token = pc.is_in(pc.utf8_lower(s), value_set=pa.array(NULL_TOKENS))
    return pc.if_else(is_null_token, pa.scalar(None, pa.string()), s)


def _where(mask: pa.Array, values: pa.Array) -> pa.Array:
    """values where mask is true, null elsewhere (mask nulls count as false)."""
    return pc.if_else(pc.fill_null(mask, False), values, pa.nulls(len(values), values.type))


def _matches(s: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(s, pattern), False)


# --------------------------------------------------------------------------- parsers (clean text -> typed, null = failed)
def _parse_bool(s: pa.Array, target: pa.DataType) -> pa.Array:
    low = pc.utf8_lower(s)
    is_true = pc.is_in(low, value_set=pa.array(TRUE_TOKENS))
    is_false = pc.is_in(low, value_set=pa.array(FALSE_TOKENS))
    return _where(pc.or_(is_true, is_false), is_true)


def _parse_int(s: pa.Array, target: pa.DataType) -> pa.Array:
    # go through decimal128(38, 0) so 20-digit values fail as values instead of raising for the array
    ok = _matches(s, _INT_RE)
    wide = pc.cast(_where(ok, s), pa.decimal128(38, 0))
    info = _int_bounds(target)
    lo, hi = pa.scalar(info[0], pa.decimal128(38, 0)), pa.scalar(info[1], pa.decimal128(38, 0))
    fits = pc.and_(pc.greater_equal(wide, lo), pc.less_equal(wide, hi))
    return pc.cast(_where(fits, wide), target)


def _int_bounds(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    if pa.types.is_unsigned_integer(t):
        return 0, 2 ** bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _parse_float(s: pa.Array, target: pa.DataType) -> pa.Array:
    ok = _matches(s, _NUM_RE)
    return pc.cast(pc.cast(_where(ok, s), pa.float64()), target)


def _parse_decimal(s: pa.Array, target: pa.DataType) -> pa.Array:
    # drop trailing fraction zeros and leading integer zeros: '012.500' fits decimal(4, 1)
    s = pc.replace_substring_regex(s, r"^([+-]?\d*\.\d*?)0+$", r"\1")
    s = pc.replace_substring_regex(s, r"^([+-]?)0+(\d)", r"\1\2")
    int_digits, scale = target.precision - target.scale, target.scale
    frac = rf"(\.\d{{0,{scale}}})?" if scale else r"\.?"
    ok = pc.and_(_matches(s, rf"^[+-]?\d{{0,{int_digits}}}{frac}$"), _matches(s, r"\d"))
    return pc.cast(_where(ok, s), target)


def _parse_date(s: pa.Array, target: pa.DataType) -> pa.Array:
    ok = _matches(s, _DATE_RE)
    s = _where(ok, s)
    parsed = pc.coalesce(*[pc.strptime(s, format=f, unit="s", error_is_null=True) for f in _DATE_FORMATS])
    return pc.cast(pc.cast(_real_days(s, parsed), pa.date32()), target)


def _real_days(text: pa.Array, parsed: pa.Array) -> pa.Array:
    """Null where strptime rolled an impossible day over ('2024-02-30' -> March 1)."""
    ymd = pc.extract_regex(text, r"^(?P<y>\d{4})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})")
    dmy = pc.extract_regex(text, r"^(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})")
    # struct_field, not .field(): rows that did not match must read as null, not ''
    day = pc.cast(pc.coalesce(pc.struct_field(ymd, "d"), pc.struct_field(dmy, "d")), pa.int64())
    month = pc.cast(pc.coalesce(pc.struct_field(ymd, "m"), pc.struct_field(dmy, "m")), pa.int64())
    same = pc.and_(pc.equal(pc.day(parsed), day), pc.equal(pc.month(parsed), month))
    return _where(same, parsed)


def _parse_timestamp(s: pa.Array, target: pa.DataType) -> pa.Array:
    values, _ = _timestamps(s)
    if target.tz is not None:
        values = values.view(pa.timestamp("us", tz="UTC"))
    return pc.cast(values, target, safe=False)


def _timestamps(s: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(UTC wall time as naive timestamp[us], whether the text carried a zone); date-only = midnight."""
    parts = pc.extract_regex(s, _TS_RE)
    body = pc.replace_substring_regex(parts.field("body"), r"^(\S+?)[T ]\s*", r"\1 ")
    local = pc.coalesce(*[pc.strptime(body, format=f, unit="us", error_is_null=True) for f in _TS_FORMATS])
    local = _real_days(body, local)
    local = pc.add(local, _fraction_us(parts.field("frac")))
    tz = parts.field("tz")
    zoned = pc.fill_null(pc.greater(pc.utf8_length(tz), 0), False)
    utc = pc.subtract(local, _offset_us(tz))
    date_only = pc.cast(_parse_date(s, pa.date32()), pa.timestamp("us"))
    return pc.coalesce(utc, date_only), zoned


def _fraction_us(frac: pa.Array) -> pa.Array:
    digits = pc.utf8_slice_codeunits(pc.utf8_rpad(pc.utf8_slice_codeunits(frac, 1), width=6, padding="0"), 0, 6)
    return pc.cast(pc.cast(digits, pa.int64()), pa.duration("us"))


def _offset_us(tz: pa.Array) -> pa.Array:
    m = pc.extract_regex(pc.if_else(_matches(tz, r"^[+-]"), tz, pa.scalar("+00:00")),
                         r"^(?P<sign>[+-])(?P<hh>\d{2}):?(?P<mm>\d{2})?$")
    mm = m.field("mm")
    minutes = pc.add(pc.multiply(pc.cast(m.field("hh"), pa.int64()), 60),
                     pc.cast(pc.if_else(pc.equal(mm, ""), pa.scalar("0"), mm), pa.int64()))
    signed = pc.if_else(pc.equal(m.field("sign"), "-"), pc.negate(minutes), minutes)
    return pc.cast(pc.multiply(signed, 60_000_000), pa.duration("us"))


def _parser_for(target: pa.DataType) -> Callable[[pa.Array, pa.DataType], pa.Array] | None:
    if pa.types.is_boolean(target):
        return _parse_bool
    if pa.types.is_integer(target):
        return _parse_int
    if pa.types.is_floating(target):
        return _parse_float
    if pa.types.is_decimal(target):
        return _parse_decimal
    if pa.types.is_date(target):
        return _parse_date
    if pa.types.is_timestamp(target):
        return _parse_timestamp
    return None


# --------------------------------------------------------------------------- coercion
def coerce_column(arr: pa.Array | pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Cast ``arr`` to ``target``; return (values with nulls where parsing failed, failed mask).

    ``failed`` is true exactly for non-null input that could not become ``target``
    (text that is empty or spells null becomes null without failing). Text is
    trimmed; bools accept true/false/yes/no/t/f/y/n/1/0; dates accept
    2024-01-05, 2024/01/05 and 05.01.2024; timestamps add a time, optional
    fraction and zone. Zoned text to a naive target gives UTC wall time; naive
    text to a zoned target is read as UTC. Example::

        values, failed = coerce_column(pa.array(["1", " 2 ", "x", None]), pa.int64())
        # values: [1, 2, null, null]; failed: [False, False, True, False]
    """
    arr = _array(arr)
    if arr.type == target:
        return arr, pa.repeat(False, len(arr))
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target), pa.repeat(False, len(arr))
    if _is_text(arr.type):
        return _coerce_text(arr, target)
    try:
        return pc.cast(arr, target), pa.repeat(False, len(arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    if _is_text(target) and _is_nested(arr.type):
        return _json_text(arr), pa.repeat(False, len(arr))
    try:
        text = pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # no path from this type: every value fails, so silver quarantines instead of crashing
        return pa.nulls(len(arr), target), pc.is_valid(arr)
    return _coerce_text(text, target)


def _coerce_text(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    if _is_text(target):
        return pc.cast(arr, target), pa.repeat(False, len(arr))
    parser = _parser_for(target)
    s = _clean(arr)
    if parser is None:
        try:
            values = pc.cast(s, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return pa.nulls(len(arr), target), pc.is_valid(s)
    else:
        values = parser(s, target)
    failed = pc.and_(pc.is_valid(s), pc.is_null(values))
    return values, failed


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


def _json_text(arr: pa.Array) -> pa.Array:
    # nested values have no Arrow cast to text; this per-value path only runs for nested -> string
    return pa.array([None if v is None else json.dumps(v, default=str, ensure_ascii=False)
                     for v in arr.to_pylist()], pa.string())


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
    return [_infer(name, _array(sample.column(name))) for name in sample.column_names]


def _infer(name: str, arr: pa.Array) -> ColumnInfo:
    if pa.types.is_null(arr.type):
        return ColumnInfo(name, pa.string(), confidence=1.0,
                          evidence=f"all {len(arr)} sampled values were null; defaulted to string")
    if not _is_text(arr.type):
        kind = "nested JSON value kept" if _is_nested(arr.type) else "typed by the source"
        return ColumnInfo(name, arr.type, confidence=1.0, evidence=f"{kind} as {arr.type}")
    s = _clean(arr)
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
    yield "int64", pa.int64(), pc.is_valid(_parse_int(s, pa.int64()))
    yield from _decimal_candidate(s)
    yield "float64", pa.float64(), _matches(s, _NUM_RE)
    yield "date", pa.date32(), pc.is_valid(_parse_date(s, pa.date32()))
    yield from _timestamp_candidate(s)
    yield "uuid (kept as string)", pa.string(), _matches(s, _UUID_RE)


def _bool_candidate(s: pa.Array):
    ok = pc.is_valid(_parse_bool(s, pa.bool_()))
    # a column of only 0/1 is more likely a number than a flag: int64 keeps it lossless
    worded = pc.any(pc.and_(ok, pc.invert(pc.is_in(s, value_set=pa.array(["0", "1"]))))).as_py()
    if worded:
        yield "bool", pa.bool_(), ok


def _decimal_candidate(s: pa.Array):
    """Decimal when every value with a point has the same scale (money: '12.50', '3.00')."""
    fixed = _matches(s, _FIXED_RE)
    pointed = s.filter(fixed)
    if len(pointed) == 0:
        return
    scales = pc.unique(pc.utf8_length(pc.extract_regex(pointed, r"\.(?P<f>\d+)$").field("f")))
    if len(scales) != 1:
        return
    scale = scales[0].as_py()
    int_digits = pc.max(pc.utf8_length(pc.replace_substring_regex(
        s.filter(_matches(s, r"^[+-]?\d*(\.\d+)?$")), r"^[+-]?0*(\d*).*$", r"\1"))).as_py() or 1
    if int_digits + scale > 38:
        return
    precision = 18 if int_digits + scale <= 18 else 38
    dtype = pa.decimal128(precision, scale)
    yield f"decimal({precision},{scale})", dtype, pc.is_valid(_parse_decimal(s, dtype))


def _timestamp_candidate(s: pa.Array):
    values, zoned = _timestamps(s)
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
