"""Text and Arrow values into a target Arrow type, vectorised and total (core: every layer may use it).

``coerce_column`` turns a column into a target type and says which non-null values failed, so
silver can quarantine exactly those rows; the parsers and patterns below are also what schema
discovery (``eai_ray.ingestion.discovery``) uses to propose types.

Example::

    import pyarrow as pa
    from eai_ray.coerce import coerce_column
    values, failed = coerce_column(pa.array(["1", " 2 ", "x", None]), pa.int64())
"""
from __future__ import annotations

import json
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

NULL_TOKENS = ["", "null", "none", "na", "n/a"]
TRUE_TOKENS = ["true", "t", "yes", "y", "1"]
FALSE_TOKENS = ["false", "f", "no", "n", "0"]

_INT_RE = r"^[+-]?\d{1,38}$"
NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:nan|inf|infinity)$"
FIXED_RE = r"^[+-]?\d*\.\d+$"
UUID_RE = r"^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$"
_DATE_RE = r"^(\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4})$"
# date, time, optional fraction and zone; the zone only counts after a time so '2024-01-05' is not '-05'
_TS_RE = (r"^(?P<body>(?:\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4})[T ]\s*\d{1,2}:\d{2}(?::\d{2})?)"
          r"(?P<frac>[.,]\d{1,9})?\s*(?P<tz>Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$")
_DATE_FORMATS = ["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y"]
_TS_FORMATS = [f"{d} {t}" for d in _DATE_FORMATS for t in ("%H:%M:%S", "%H:%M")]


# --------------------------------------------------------------------------- helpers
def as_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def clean_text(arr: pa.Array) -> pa.Array:
    """Trimmed text with the usual null spellings ('', 'NULL', 'N/A') turned into nulls."""
    s = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    is_null_token = pc.is_in(pc.utf8_lower(s), value_set=pa.array(NULL_TOKENS))
    return pc.if_else(is_null_token, pa.scalar(None, pa.string()), s)


def _where(mask: pa.Array, values: pa.Array) -> pa.Array:
    """values where mask is true, null elsewhere (mask nulls count as false)."""
    return pc.if_else(pc.fill_null(mask, False), values, pa.nulls(len(values), values.type))


def matches(s: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(s, pattern), False)


# --------------------------------------------------------------------------- parsers (clean text -> typed, null = failed)
def parse_bool(s: pa.Array, target: pa.DataType) -> pa.Array:
    low = pc.utf8_lower(s)
    is_true = pc.is_in(low, value_set=pa.array(TRUE_TOKENS))
    is_false = pc.is_in(low, value_set=pa.array(FALSE_TOKENS))
    return _where(pc.or_(is_true, is_false), is_true)


def parse_int(s: pa.Array, target: pa.DataType) -> pa.Array:
    # go through decimal128(38, 0) so 20-digit values fail as values instead of raising for the array
    ok = matches(s, _INT_RE)
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
    ok = matches(s, NUM_RE)
    return pc.cast(pc.cast(_where(ok, s), pa.float64()), target)


def parse_decimal(s: pa.Array, target: pa.DataType) -> pa.Array:
    # drop trailing fraction zeros and leading integer zeros: '012.500' fits decimal(4, 1)
    s = pc.replace_substring_regex(s, r"^([+-]?\d*\.\d*?)0+$", r"\1")
    s = pc.replace_substring_regex(s, r"^([+-]?)0+(\d)", r"\1\2")
    int_digits, scale = target.precision - target.scale, target.scale
    frac = rf"(\.\d{{0,{scale}}})?" if scale else r"\.?"
    ok = pc.and_(matches(s, rf"^[+-]?\d{{0,{int_digits}}}{frac}$"), matches(s, r"\d"))
    return pc.cast(_where(ok, s), target)


def parse_date(s: pa.Array, target: pa.DataType) -> pa.Array:
    ok = matches(s, _DATE_RE)
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
    values, _ = parse_timestamps(s)
    if target.tz is not None:
        values = values.view(pa.timestamp("us", tz="UTC"))
    return pc.cast(values, target, safe=False)


def parse_timestamps(s: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(UTC wall time as naive timestamp[us], whether the text carried a zone); date-only = midnight."""
    parts = pc.extract_regex(s, _TS_RE)
    body = pc.replace_substring_regex(parts.field("body"), r"^(\S+?)[T ]\s*", r"\1 ")
    local = pc.coalesce(*[pc.strptime(body, format=f, unit="us", error_is_null=True) for f in _TS_FORMATS])
    local = _real_days(body, local)
    local = pc.add(local, _fraction_us(parts.field("frac")))
    tz = parts.field("tz")
    zoned = pc.fill_null(pc.greater(pc.utf8_length(tz), 0), False)
    utc = pc.subtract(local, _offset_us(tz))
    date_only = pc.cast(parse_date(s, pa.date32()), pa.timestamp("us"))
    return pc.coalesce(utc, date_only), zoned


def _fraction_us(frac: pa.Array) -> pa.Array:
    digits = pc.utf8_slice_codeunits(pc.utf8_rpad(pc.utf8_slice_codeunits(frac, 1), width=6, padding="0"), 0, 6)
    return pc.cast(pc.cast(digits, pa.int64()), pa.duration("us"))


def _offset_us(tz: pa.Array) -> pa.Array:
    m = pc.extract_regex(pc.if_else(matches(tz, r"^[+-]"), tz, pa.scalar("+00:00")),
                         r"^(?P<sign>[+-])(?P<hh>\d{2}):?(?P<mm>\d{2})?$")
    mm = m.field("mm")
    minutes = pc.add(pc.multiply(pc.cast(m.field("hh"), pa.int64()), 60),
                     pc.cast(pc.if_else(pc.equal(mm, ""), pa.scalar("0"), mm), pa.int64()))
    signed = pc.if_else(pc.equal(m.field("sign"), "-"), pc.negate(minutes), minutes)
    return pc.cast(pc.multiply(signed, 60_000_000), pa.duration("us"))


def _parser_for(target: pa.DataType) -> Callable[[pa.Array, pa.DataType], pa.Array] | None:
    if pa.types.is_boolean(target):
        return parse_bool
    if pa.types.is_integer(target):
        return parse_int
    if pa.types.is_floating(target):
        return _parse_float
    if pa.types.is_decimal(target):
        return parse_decimal
    if pa.types.is_date(target):
        return parse_date
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
    arr = as_array(arr)
    if arr.type == target:
        return arr, pa.repeat(False, len(arr))
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target), pa.repeat(False, len(arr))
    if is_text(arr.type):
        return _coerce_text(arr, target)
    try:
        return pc.cast(arr, target), pa.repeat(False, len(arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    if is_text(target) and is_nested(arr.type):
        return _json_text(arr), pa.repeat(False, len(arr))
    try:
        text = pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # no path from this type: every value fails, so silver quarantines instead of crashing
        return pa.nulls(len(arr), target), pc.is_valid(arr)
    return _coerce_text(text, target)


def _coerce_text(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    if is_text(target):
        return pc.cast(arr, target), pa.repeat(False, len(arr))
    parser = _parser_for(target)
    s = clean_text(arr)
    if parser is None:
        try:
            values = pc.cast(s, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return pa.nulls(len(arr), target), pc.is_valid(s)
    else:
        values = parser(s, target)
    failed = pc.and_(pc.is_valid(s), pc.is_null(values))
    return values, failed


def is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


def _json_text(arr: pa.Array) -> pa.Array:
    # nested values have no Arrow cast to text; this per-value path only runs for nested -> string
    return pa.array([None if v is None else json.dumps(v, default=str, ensure_ascii=False)
                     for v in arr.to_pylist()], pa.string())
