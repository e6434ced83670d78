"""The silver transform: coercion, rules, quarantine with reasons, dedup; every row accounted for."""

import pyarrow as pa
import pytest

from eai_ray.config import SilverTable
from eai_ray.errors import QualityGateFailed
from eai_ray.processing.silver import transform


def spec(**kw):
    base = dict(name="orders", source="s.orders", primary_key=["id"], sequence_by="updated_at",
                columns={"id": {"type": "int64", "nullable": False}, "amount": {"type": "decimal(10,2)"},
                         "status": {"type": "string"}, "updated_at": {"type": "timestamp"}})
    base.update(kw)
    return SilverTable.model_validate(base)


def bronze():
    return pa.table({
        "id": ["1", "2", "3", "4", "4", None, "7"],
        "amount": ["10.50", "abc", "-3.00", "7.00", "8.00", "1.00", "2.00"],
        "status": ["paid", "paid", "paid", "paid", "shipped", "paid", "bogus"],
        "updated_at": ["2024-01-01 00:00:00", "2024-01-01 00:00:00", "2024-01-01 00:00:00",
                       "2024-01-01 00:00:00", "2024-01-02 00:00:00", "2024-01-01 00:00:00", "2024-01-01 00:00:00"],
        "_eai_position": [f"f.csv:{i}" for i in range(2, 9)],
    })


def test_rows_reconcile_and_reasons_are_given():
    s = spec(rules=[{"name": "non_negative", "column": "amount", "min": 0},
                    {"name": "known_status", "column": "status", "accepted_values": ["paid", "shipped"]}])
    r = transform(bronze(), s, source_types={}, run_id="r1", source="s.orders")
    assert r.good.num_rows + r.quarantined + r.duplicates == 7
    by_rule = dict(zip(r.quarantine.column("_eai_rule").to_pylist(), r.quarantine.column("_eai_reason").to_pylist()))
    assert set(by_rule) == {"type:amount", "non_negative", "known_status", "id_not_null"}
    assert "'abc' is not a valid decimal128(10, 2)" in by_rule["type:amount"]
    assert "must be >= 0" in by_rule["non_negative"]
    assert r.duplicates == 1
    good = {row["id"]: row for row in r.good.to_pylist()}
    assert good[4]["status"] == "shipped"  # the later version wins
    assert r.quarantine.column("_eai_position").to_pylist()[0].startswith("f.csv:")
    assert all(q for q in r.quarantine.column("_eai_record").to_pylist())


def test_warn_keeps_rows_and_fail_stops():
    s = spec(rules=[{"name": "known_status", "column": "status", "accepted_values": ["paid"], "action": "warn"}])
    r = transform(bronze(), s, source_types={})
    warn = next(o for o in r.rules if o.rule == "known_status")
    assert warn.failed == 2 and "bogus" in r.good.column("status").to_pylist()
    s = spec(rules=[{"name": "gate", "column": "status", "accepted_values": ["paid"], "action": "fail"}])
    with pytest.raises(QualityGateFailed) as e:
        transform(bronze(), s, source_types={})
    assert e.value.context["rule"] == "gate" and not e.value.transient


def test_expression_and_regex_rules():
    s = spec(rules=[{"name": "small", "expression": "amount < 9"},
                    {"name": "status_word", "column": "status", "regex": "^[a-z]+$"}])
    r = transform(bronze(), s, source_types={})
    assert "small" in r.quarantine.column("_eai_rule").to_pylist()


def test_expression_rule_cannot_smuggle_statements():
    from eai_ray.errors import SqlValidationError
    s = spec(rules=[{"name": "evil", "expression": "1=1; DROP TABLE x"}])
    with pytest.raises(SqlValidationError):
        transform(bronze(), s, source_types={})


def test_parse_errors_from_connectors_are_quarantined():
    b = bronze().append_column("_eai_error", pa.array([None, None, None, None, None, None, "ragged row: 3 fields"]))
    r = transform(b, spec(), source_types={})
    rules = r.quarantine.column("_eai_rule").to_pylist()
    assert "parse" in rules


def test_discovered_schema_without_declared_columns():
    s = SilverTable(name="t", source="s.t", primary_key=["id"])
    b = pa.table({"id": pa.array([1, 2, 2], pa.int64()), "v": ["a", "b", "c"]})
    r = transform(b, s, source_types={"id": pa.int64(), "v": pa.string()})
    assert r.good.num_rows == 2 and r.duplicates == 1


def test_case_colliding_discovered_columns_get_stable_suffixes():
    from eai_ray.processing.silver import silver_names

    assert silver_names(["Total", "total", "id"]) == {"Total": "Total", "total": "total__2", "id": "id"}
    # a suffix already taken (in any case) is skipped; the mapping depends only on column order
    assert silver_names(["a", "A", "a__2"]) == {"a": "a", "A": "A__3", "a__2": "a__2"}
    s = SilverTable.model_validate({"name": "t", "source": "s.t"})
    r = transform(pa.table({"Total": [1.0, 2.0], "total": [10.0, 20.0]}), s,
                  source_types={"Total": pa.float64(), "total": pa.float64()})
    assert r.good.column("Total").to_pylist() == [1.0, 2.0]
    assert r.good.column("total__2").to_pylist() == [10.0, 20.0]


def test_a_connector_type_error_quarantines_under_its_column_rule():
    s = SilverTable.model_validate({"name": "t", "source": "s.t"})
    bronze_rows = pa.table({"ts": pa.array([None, 5], pa.int64()),
                            "_eai_error": ["type:ts: value 'infinity' is outside the range of timestamp", None]})
    r = transform(bronze_rows, s, source_types={"ts": pa.int64()})
    assert r.quarantine.column("_eai_rule").to_pylist() == ["type:ts"]
    assert "infinity" in r.quarantine.column("_eai_reason")[0].as_py()
    assert r.good.num_rows == 1
