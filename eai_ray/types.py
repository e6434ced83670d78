"""Core types: the type names of pipeline YAML mapped to Arrow, the widening rules of schema evolution,
and the metadata column names connectors add to every batch (every layer may import this module)."""
from __future__ import annotations

import re

import pyarrow as pa

# column names a connector may add to every batch; the bronze writer keeps them
POSITION_COLUMN = "_eai_position"  # where the row came from: file:line, page number, key range
RAW_COLUMN = "_eai_raw"  # the raw record as text (files, REST), for full fidelity
ERROR_COLUMN = "_eai_error"  # why a row could not be parsed as-is (null for good rows); silver quarantines it

_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)")

_SIMPLE = {
    "int8": pa.int32(), "int16": pa.int32(), "int32": pa.int32(), "int": pa.int64(), "int64": pa.int64(),
    "bigint": pa.int64(), "float": pa.float64(), "float32": pa.float32(), "float64": pa.float64(),
    "double": pa.float64(), "bool": pa.bool_(), "boolean": pa.bool_(), "string": pa.string(),
    "text": pa.string(), "date": pa.date32(), "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"), "uuid": pa.string(), "json": pa.string(),
}


def arrow_type(name: str) -> pa.DataType:
    """'decimal(12,2)' -> pa.decimal128(12, 2); 'timestamptz' -> timestamp[us, tz=UTC]."""
    name = name.strip().lower()
    m = _DECIMAL.fullmatch(name)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return _SIMPLE[name]


def iceberg_safe(t: pa.DataType) -> pa.DataType:
    """Arrow types Iceberg cannot store, mapped to ones it can (unsigned, small ints, ns, large strings)."""
    if pa.types.is_dictionary(t):
        return iceberg_safe(t.value_type)
    if pa.types.is_unsigned_integer(t):
        return pa.int64()
    if pa.types.is_int8(t) or pa.types.is_int16(t):
        return pa.int32()
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_timestamp(t) and t.unit in ("ns", "s", "ms"):
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, iceberg_safe(f.type), True) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(iceberg_safe(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(iceberg_safe(t.key_type), iceberg_safe(t.item_type))
    return t


def make_iceberg_safe(table: pa.Table) -> pa.Table:
    """Cast columns to types Iceberg stores; nullable everywhere (sources change).

    A value the stored type cannot hold raises SchemaError naming the column and the value,
    never a bare Arrow error.
    """
    fields = [pa.field(f.name, iceberg_safe(f.type), True) for f in table.schema]
    target = pa.schema(fields)
    if target.equals(table.schema):
        return table
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
        pass
    for f, t in zip(table.schema, target):  # find the column (and value) that did not fit
        if f.type.equals(t.type):
            continue
        try:
            table.column(f.name).cast(t.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError) as exc:
            from eai_ray.errors import SchemaError

            detail = str(exc).splitlines()[0][:300]
            raise SchemaError(f"column '{f.name}': a {f.type} value cannot be stored as {t.type} ({detail}); "
                              f"read '{f.name}' as text (a silver column type) or fix the value at the source",
                              column=f.name, type=str(f.type)) from None
    return table.cast(target)


def can_widen(old: pa.DataType, new: pa.DataType) -> bool:
    """Iceberg's allowed promotions: int->long, float->double, decimal precision up (same scale)."""
    if old.equals(new):
        return True
    if pa.types.is_int32(old) and pa.types.is_int64(new):
        return True
    if pa.types.is_float32(old) and pa.types.is_float64(new):
        return True
    if pa.types.is_decimal(old) and pa.types.is_decimal(new):
        return old.scale == new.scale and new.precision >= old.precision
    return False


def fits_into(value_type: pa.DataType, column_type: pa.DataType) -> bool:
    """Data of `value_type` can be written into an existing column of `column_type` without loss."""
    if value_type.equals(column_type) or can_widen(value_type, column_type):
        return True
    if pa.types.is_integer(value_type) and pa.types.is_integer(column_type):
        return column_type.bit_width >= value_type.bit_width
    if pa.types.is_timestamp(value_type) and pa.types.is_timestamp(column_type):
        return (value_type.tz is None) == (column_type.tz is None)
    if pa.types.is_null(value_type):
        return True
    if pa.types.is_struct(value_type) and pa.types.is_struct(column_type):
        names = {f.name: f.type for f in column_type}
        return all(f.name in names and fits_into(f.type, names[f.name]) for f in value_type)
    if (pa.types.is_list(value_type) or pa.types.is_large_list(value_type)) and pa.types.is_list(column_type):
        return fits_into(value_type.value_type, column_type.value_type)
    return False
