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


# ---------------------------------------------------------------------- SQL under a budget
def test_row_limit_caps_the_outermost_result_whatever_its_shape():
    import pyarrow as pa

    from eai_ray.processing.sql import run_select, validate_select

    schema = {"silver.t": {"a": "BIGINT"}}
    data = {"silver.t": pa.table({"a": list(range(100))})}
    for sql in ("SELECT a FROM silver.t UNION ALL SELECT a FROM silver.t", "(SELECT a FROM silver.t)",
                "SELECT a FROM silver.t LIMIT 1000", "SELECT a FROM silver.t INTERSECT SELECT a FROM silver.t",
                "SELECT a FROM silver.t EXCEPT SELECT a FROM silver.t WHERE a < 3"):
        assert run_select(validate_select(sql, schema, limit=5), data).num_rows == 5, sql


def test_a_query_over_its_budget_is_stopped_with_the_reason():
    import pyarrow as pa

    from eai_ray.processing.sql import SqlBudget, run_select, validate_select

    schema, data = {"silver.t": {"a": "BIGINT"}}, {"silver.t": pa.table({"a": list(range(3000))})}
    cross = validate_select("SELECT x.a, y.a AS b FROM silver.t x, silver.t y", schema)
    with pytest.raises(SqlValidationError, match="result passed 1 MiB"):
        run_select(cross, data, budget=SqlBudget(max_result_bytes=1 << 20))
    slow = validate_select("SELECT count(*) FROM silver.t x, silver.t y, silver.t z WHERE x.a + y.a = z.a", schema)
    with pytest.raises(SqlValidationError, match="time budget of 0.5 s"):
        run_select(slow, data, budget=SqlBudget(timeout_s=0.5))
    wide = validate_select("SELECT x.a, y.a AS b, repeat('x', 200) AS pad FROM silver.t x, silver.t y "
                           "ORDER BY 3, 1 DESC", schema)
    with pytest.raises(SqlValidationError, match="memory budget"):
        run_select(wide, {"silver.t": pa.table({"a": list(range(1500))})}, budget=SqlBudget(memory_limit="32MB"))


def test_parser_failures_are_refusals_not_crashes():
    schema = {"silver.t": {"a": "BIGINT"}}
    for sql in ("SELECT 'unterminated FROM silver.t", "SELECT " + "(" * 5000 + "1" + ")" * 5000):
        with pytest.raises(SqlValidationError, match="does not parse"):
            validate_select(sql, schema)


def test_rule_and_semantic_expressions_cannot_read_files():
    import pyarrow as pa

    from eai_ray.processing.sql import evaluate_over

    with pytest.raises(SqlValidationError):
        evaluate_over(pa.table({"a": [1]}), "read_text('/etc/passwd') AS x")
    with pytest.raises(SqlValidationError):
        evaluate_over(pa.table({"a": [1]}), "(SELECT content FROM read_text('/etc/passwd')) AS x")
