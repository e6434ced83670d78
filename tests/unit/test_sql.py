"""SQL validation: one read-only SELECT over known tables and columns; lineage through sqlglot."""
import pyarrow as pa
import pytest

from eai_ray.config import GoldModel
from eai_ray.errors import ConfigError, SqlValidationError
from eai_ray.orchestration.dag import gold_order
from eai_ray.processing.sql import column_lineage, run_select, validate_select

SCHEMA = {"silver.orders": {"id": "BIGINT", "customer_id": "BIGINT", "amount": "DOUBLE"},
          "silver.customers": {"id": "BIGINT", "country": "VARCHAR"}}


def test_valid_query_and_lineage():
    q = validate_select("SELECT c.country, SUM(o.amount) AS revenue FROM silver.orders o "
                        "JOIN silver.customers c ON o.customer_id = c.id GROUP BY c.country", SCHEMA)
    assert q.tables == ["silver.customers", "silver.orders"]
    assert q.columns == ["country", "revenue"]
    edges = column_lineage(q, SCHEMA)
    assert ("silver.orders", "amount", "revenue") in edges
    assert ("silver.customers", "country", "country") in edges


@pytest.mark.parametrize("sql, fragment", [
    ("DROP TABLE silver.orders", "only SELECT"),
    ("DELETE FROM silver.orders", "only SELECT"),
    ("SELECT 1; DROP TABLE silver.orders", "exactly one statement"),
    ("SELECT * FROM information_schema.tables", "not allowed"),
    ("SELECT * FROM silver.nope", "unknown table"),
    ("SELECT nope FROM silver.orders", "unknown column"),
    ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
    ("SELEC id FROM silver.orders", "does not parse"),
])
def test_refused(sql, fragment):
    with pytest.raises(SqlValidationError, match=fragment):
        validate_select(sql, SCHEMA)


def test_limit_is_enforced_and_execution_works():
    q = validate_select("SELECT id FROM silver.orders ORDER BY id", SCHEMA, limit=2)
    out = run_select(q, {"silver.orders": pa.table({"id": [3, 1, 2], "customer_id": [1, 1, 1],
                                                    "amount": [1.0, 2.0, 3.0]})})
    assert out.column("id").to_pylist() == [1, 2]


def test_gold_order_and_cycles():
    a = GoldModel(name="a", sql="SELECT * FROM gold.b")
    b = GoldModel(name="b", sql="SELECT * FROM silver.orders")
    assert [m.name for m in gold_order([a, b])] == ["b", "a"]
    c = GoldModel(name="b", sql="SELECT * FROM gold.a")
    with pytest.raises(ConfigError, match="cycle"):
        gold_order([a, c])
