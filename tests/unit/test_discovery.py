"""Schema inference and coercion for schemaless sources (no Ray, no network)."""
from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from eai_ray.ingestion.discovery import coerce_column, infer_columns, records_to_table

UTC = dt.timezone.utc


def infer(values, **kw):
    return infer_columns(pa.table({"c": pa.array(values)}), **kw)[0]


# --------------------------------------------------------------------------- inference
@pytest.mark.parametrize("values, expected", [
    (["true", "False", " yes ", "NO", "t", "f"], pa.bool_()),
    (["1", "-2", "+30", " 4 "], pa.int64()),
    (["0", "1", "1", "0"], pa.int64()),  # only 0/1: a number, not a flag
    (["1.5", "2.25", "3e4", "-0.1"], pa.float64()),
    (["12.50", "3.00", "100.10", "7"], pa.decimal128(18, 2)),
    (["2024-01-05", "2024/01/06", "05.01.2024"], pa.date32()),
    (["2024-01-05 10:00:00", "2024-01-05T10:00:00.123", "2024-01-05 10:00", "2024-01-06"], pa.timestamp("us")),
    (["2024-01-05T10:00:00+01:00", "2024-01-05 10:00:00Z", "2024-01-05T10:00:00.5-0130"],
     pa.timestamp("us", tz="UTC")),
    (["alice", "bob"], pa.string()),
])
def test_infers_the_most_specific_type(values, expected):
    col = infer(values)
    assert col.type == expected
    assert col.confidence == 1.0
    assert f"{len(values)}/{len(values)} sampled values" in col.evidence


def test_a_few_bad_values_do_not_demote_an_int_column():
    col = infer([str(i) for i in range(198)] + ["n/a?", "oops"])
    assert col.type == pa.int64()
    assert col.confidence == pytest.approx(0.99)
    assert col.evidence == "198/200 sampled values parsed as int64"


def test_too_many_bad_values_fall_back_to_string():
    col = infer([str(i) for i in range(90)] + ["x"] * 10)
    assert col.type == pa.string()


def test_null_spellings_do_not_count_against_a_type():
    col = infer(["1", "", None, "NULL", "n/a", "2"])
    assert col.type == pa.int64()
    assert col.evidence == "2/2 sampled values parsed as int64"


def test_decimal_needs_one_scale_else_float():
    assert infer(["1.5", "2.25"]).type == pa.float64()
    assert infer(["1.50", "2.25", "10"]).type == pa.decimal128(18, 2)


def test_uuid_stays_string_with_evidence():
    col = infer(["123e4567-e89b-12d3-a456-426614174000", "{123E4567-E89B-12D3-A456-426614174001}"])
    assert col.type == pa.string()
    assert "uuid" in col.evidence


def test_empty_and_null_columns_default_to_string():
    assert infer(["", None]).type == pa.string()
    assert infer_columns(pa.table({"c": pa.nulls(3)}))[0].type == pa.string()


def test_typed_and_nested_columns_keep_their_type():
    nested = pa.array([{"a": 1, "tags": ["x"]}, None])
    cols = infer_columns(pa.table({"n": nested, "i": pa.array([1, 2], pa.int32()),
                                   "l": pa.array([[1], [2, 3]])}))
    assert [c.type for c in cols] == [nested.type, pa.int32(), pa.list_(pa.int64())]
    assert all(c.confidence == 1.0 for c in cols)


def test_sample_rows_limits_what_is_looked_at():
    values = [str(i) for i in range(100)] + ["x"] * 100
    assert infer(values, sample_rows=100).type == pa.int64()
    assert infer(values).type == pa.string()


def test_date_without_four_digit_year_is_not_a_date():
    assert infer(["24-01-05", "24-01-06"]).type == pa.string()


# --------------------------------------------------------------------------- coercion
def test_coerce_text_to_int_marks_failures_only_for_non_null_input():
    values, failed = coerce_column(pa.array(["1", " 2 ", "x", None, "", "99999999999999999999"]), pa.int64())
    assert values.to_pylist() == [1, 2, None, None, None, None]
    assert failed.to_pylist() == [False, False, True, False, False, True]


def test_coerce_text_to_narrow_int_checks_range():
    values, failed = coerce_column(pa.array(["127", "128", "-129"]), pa.int8())
    assert values.to_pylist() == [127, None, None]
    assert failed.to_pylist() == [False, True, True]


def test_coerce_bools_case_insensitive():
    values, failed = coerce_column(pa.array(["TRUE", "f", "Yes", "no", "1", "0", "maybe"]), pa.bool_())
    assert values.to_pylist() == [True, False, True, False, True, False, None]
    assert failed.to_pylist() == [False] * 6 + [True]


def test_coerce_float_and_decimal():
    values, failed = coerce_column(pa.array(["1.5", "1e3", "abc", "nan"]), pa.float64())
    assert values.to_pylist()[:2] == [1.5, 1000.0]
    assert failed.to_pylist() == [False, False, True, False]
    values, failed = coerce_column(pa.array(["12.50", "012.5", "12.555", "123456", "-3", "1234567"]),
                                   pa.decimal128(8, 2))
    assert values.to_pylist() == [decimal.Decimal("12.50"), decimal.Decimal("12.50"), None,
                                  decimal.Decimal("123456.00"), decimal.Decimal("-3.00"), None]
    assert failed.to_pylist() == [False, False, True, False, False, True]


def test_coerce_dates_in_common_formats():
    values, failed = coerce_column(pa.array(["2024-01-05", "2024/01/05", "05.01.2024", "2024-02-30", "x"]),
                                   pa.date32())
    assert values.to_pylist() == [dt.date(2024, 1, 5)] * 3 + [None, None]
    assert failed.to_pylist() == [False, False, False, True, True]


def test_coerce_timestamps_naive_and_zoned():
    text = pa.array(["2024-01-05 10:00:00", "2024-01-05T10:00:00.25Z", "2024-01-05T10:00+02:00",
                     "05.01.2024 10:00", "2024-01-05", "bad", "2024-02-30 10:00:00"])
    naive, failed = coerce_column(text, pa.timestamp("us"))
    assert naive.to_pylist() == [dt.datetime(2024, 1, 5, 10), dt.datetime(2024, 1, 5, 10, 0, 0, 250000),
                                 dt.datetime(2024, 1, 5, 8), dt.datetime(2024, 1, 5, 10),
                                 dt.datetime(2024, 1, 5), None, None]
    assert failed.to_pylist() == [False] * 5 + [True, True]
    zoned, _ = coerce_column(text, pa.timestamp("us", tz="UTC"))
    assert zoned.type == pa.timestamp("us", tz="UTC")
    assert zoned[2].as_py() == dt.datetime(2024, 1, 5, 8, tzinfo=UTC)
    assert zoned[0].as_py() == dt.datetime(2024, 1, 5, 10, tzinfo=UTC)  # naive text is read as UTC


def test_coerce_numeric_widening_and_narrowing():
    values, failed = coerce_column(pa.array([1, 2], pa.int32()), pa.int64())
    assert values.type == pa.int64() and not pc.any(failed).as_py()
    values, failed = coerce_column(pa.array([1, None]), pa.float64())
    assert values.to_pylist() == [1.0, None] and failed.to_pylist() == [False, False]
    values, failed = coerce_column(pa.array([1.0, 2.5, None]), pa.int64())
    assert values.to_pylist() == [1, None, None]
    assert failed.to_pylist() == [False, True, False]
    values, _ = coerce_column(pa.array([1, 2]), pa.decimal128(10, 2))
    assert values.to_pylist() == [decimal.Decimal("1.00"), decimal.Decimal("2.00")]


def test_coerce_to_string_and_from_nested():
    values, failed = coerce_column(pa.array([1.5, None]), pa.string())
    assert values.to_pylist() == ["1.5", None] and failed.to_pylist() == [False, False]
    values, _ = coerce_column(pa.array([{"a": 1}, None]), pa.string())
    assert values.to_pylist() == ['{"a": 1}', None]
    values, failed = coerce_column(pa.array([{"a": 1}, None]), pa.int64())
    assert values.to_pylist() == [None, None] and failed.to_pylist() == [True, False]


def test_coerce_accepts_chunked_arrays_and_null_type():
    values, failed = coerce_column(pa.chunked_array([["1"], ["2"]]), pa.int64())
    assert values.to_pylist() == [1, 2]
    values, failed = coerce_column(pa.nulls(2), pa.date32())
    assert values.type == pa.date32() and failed.to_pylist() == [False, False]


def test_coerce_converts_whole_columns():
    # how fast is a benchmark's question (benchmarks/ingest.py), not a test's
    n = 20_000
    text = pc.cast(pa.array(range(n)), pa.string())
    values, failed = coerce_column(text, pa.int64())
    assert values.to_pylist() == list(range(n)) and not pc.any(failed).as_py()
    stamps, failed = coerce_column(pa.array(["2024-01-05T10:00:00.123+01:00"] * n), pa.timestamp("us", tz="UTC"))
    assert stamps.to_pylist() == [dt.datetime(2024, 1, 5, 9, 0, 0, 123000, tzinfo=dt.timezone.utc)] * n
    assert not pc.any(failed).as_py()


# --------------------------------------------------------------------------- JSON records
def test_records_nested_and_conflicting_types():
    t = records_to_table([{"a": 1, "n": {"x": [1, 2]}, "m": 1}, {"a": "one", "m": 2.5, "extra": True}])
    assert t.column_names == ["a", "n", "m", "extra"]
    assert t.column("a").to_pylist() == ["1", '"one"']  # type changed: JSON text
    assert t.column("n").type == pa.struct([("x", pa.list_(pa.int64()))])
    assert t.column("m").type == pa.float64()  # int and float widen
    assert t.column("extra").to_pylist() == [None, True]


def test_records_that_arrow_cannot_hold_become_json_text():
    t = records_to_table([{"big": 2**70, "empty": {}, "nul": None}])
    assert t.column("big").to_pylist() == [str(2**70)]
    assert t.column("empty").to_pylist() == ["{}"]
    assert t.column("nul").type == pa.string()
    assert records_to_table([{}, {}]).num_rows == 2
