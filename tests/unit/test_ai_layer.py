"""Golden-file and security tests for the schema mapper, the semantic layer and NL-to-SQL.

Golden files live in tests/unit/golden/; regenerate with EAI_UPDATE_GOLDEN=1 after a reviewed change.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

pytest.importorskip("sklearn")
pytest.importorskip("sentence_transformers")

from eai_ray.processing import nl2sql  # noqa: E402
from eai_ray.processing.mapping import map_columns  # noqa: E402
from eai_ray.storage.review import ReviewStore  # noqa: E402
from eai_ray.storage.semantic import Filter, SemanticModel  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("EAI_UPDATE_GOLDEN") == "1"


def golden(name: str, data):
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------- demo data
@pytest.fixture(scope="module")
def demo_tables():
    rng = random.Random(3)
    countries = ["DE", "FR", "US", "GB"]
    customers = pa.table({"id": list(range(1, 41)), "name": [f"Customer {i}" for i in range(1, 41)],
                          "email": [f"c{i}@example.com" for i in range(1, 41)],
                          "country": [countries[i % 4] for i in range(40)],
                          "signup_date": [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(40)]})
    orders = pa.table({"id": list(range(1, 201)), "customer_id": [rng.randint(1, 40) for _ in range(200)],
                       "amount": [round(rng.uniform(5, 300), 2) for _ in range(200)],
                       "currency": ["EUR"] * 200,
                       "status": [rng.choice(["placed", "paid", "shipped", "cancelled"]) for _ in range(200)],
                       "ordered_at": [dt.datetime(2026, 1, 1) + dt.timedelta(hours=7 * i) for i in range(200)]})
    payments = pa.table({"id": list(range(1, 101)), "order_id": [rng.randint(1, 200) for _ in range(100)],
                         "amount": [round(rng.uniform(5, 300), 2) for _ in range(100)],
                         "method": [rng.choice(["card", "paypal", "transfer"]) for _ in range(100)],
                         "paid_at": [dt.datetime(2026, 1, 2) + dt.timedelta(hours=9 * i) for i in range(100)]})
    products = pa.table({"id": [1, 2, 3], "name": ["Lamp", "Desk", "Chair"], "category": ["home", "office", "office"],
                         "price": [20.0, 150.0, 80.0], "in_stock": [True, False, True]})
    return {"silver.customers": customers, "silver.orders": orders, "silver.payments": payments,
            "silver.products": products}


@pytest.fixture(scope="module")
def demo_model():
    return SemanticModel.load(REPO / "configs/semantic/demo.yaml")


DEMO_QUESTIONS = [
    "revenue by country",
    "how many orders per status",
    "amount paid by payment method",
    "number of customers in DE",
    "top 2 countries by revenue",
    "average order value by country in 2026",
    "how many products per category",
]


def test_nl2sql_demo_golden(demo_tables, demo_model):
    out = {}
    for q in DEMO_QUESTIONS:
        a = nl2sql.answer(q, catalog=demo_tables, semantic=demo_model)
        assert a["valid"], (q, a["error"])
        assert a["tables"] and a["used_columns"] and 0 < a["confidence"] <= 1
        out[q] = {"sql": a["sql"], "tables": a["tables"], "rows": len(a["rows"])}
    assert out == golden("nl2sql_demo.json", out)


def test_semantic_compile_deep_join(demo_model):
    q = demo_model.compile(metrics=["amount_paid"], dimensions=["customers.country"],
                           filters=[Filter("orders.status", "=", "paid")])
    # payments -> orders -> customers: two hops
    assert ("payments", "orders") in q.joins and ("orders", "customers") in q.joins
    assert q.sql == golden("semantic_demo_amount_paid.json", {"sql": q.sql})["sql"]


# ---------------------------------------------------------------------- security
REFUSED = [
    "delete all orders",
    "drop table silver.customers",
    "update customers set country = 'DE'",
    "insert a new customer named Bob",
    "show revenue; drop table silver.orders",
    "list the tables in information_schema",
    "read the system catalog pg_catalog.pg_tables",
    "select * from read_csv('/etc/passwd')",
    "truncate the payments table",
]


@pytest.mark.parametrize("question", REFUSED)
def test_write_and_system_questions_refused(question, demo_tables, demo_model):
    a = nl2sql.answer(question, catalog=demo_tables, semantic=demo_model)
    assert not a["valid"] and a["error"].startswith("refused"), a
    assert a["rows"] == []


@pytest.mark.parametrize("sql", ["DROP TABLE silver.orders", "SELECT 1; DELETE FROM silver.orders",
                                 "SELECT * FROM information_schema.tables", "SELECT * FROM read_csv('x.csv')",
                                 "SELECT nope FROM silver.orders"])
def test_generated_sql_is_validated(sql, demo_tables):
    res = nl2sql._check_and_run(sql, nl2sql.catalog_schema(demo_tables), demo_tables, execute=True, limit=10)
    assert res["valid"] is False and res["error"]


class _EvilLLM:
    model = "evil"

    def complete(self, prompt, **kw):
        from types import SimpleNamespace
        return SimpleNamespace(text=" 1; DROP TABLE silver.orders")


def test_llm_output_cannot_write(demo_tables, demo_model):
    a = nl2sql.answer("how many orders", catalog=demo_tables, semantic=None, llm=_EvilLLM())
    # only the first statement survives, and it is validated as one read-only SELECT
    assert "DROP" not in (a["sql"] or "").upper()


# ---------------------------------------------------------------------- mapper
DEMO_TARGET = [{"name": "id", "type": "int64"}, {"name": "name", "type": "string"},
               {"name": "email", "type": "string"}, {"name": "country", "type": "string"},
               {"name": "signup_date", "type": "date"}]
DEMO_SOURCE = [{"name": "CustID", "samples": ["17", "18", "19", "20"]},
               {"name": "full_nm", "samples": ["Ann Lee", "Bob Ray", "Cy Twombly"]},
               {"name": "eMailAddr", "samples": ["ann@x.com", "bob@y.org"]},
               {"name": "ctry_cd", "samples": ["DE", "FR", "US"]},
               {"name": "registered", "samples": ["2024-01-02", "2023-05-06"]},
               {"name": "loyalty_pts", "samples": ["120", "0", "35"]}]


def test_mapper_demo_golden():
    res = map_columns(DEMO_SOURCE, DEMO_TARGET)
    pairs = {r["source"]: r["target"] for r in res}
    assert pairs["eMailAddr"] == "email" and pairs["ctry_cd"] == "country"
    for r in res:
        assert set(r) >= {"source", "target", "confidence", "rationale", "status"} and 0 <= r["confidence"] <= 1
    assert pairs == golden("mapper_demo.json", pairs)


def test_mapper_tpch_golden():
    pytest.importorskip("duckdb_extension_tpch")
    from eai_ray.processing.mapping.fabricate import fabricate, tpc_tables
    tasks = fabricate(tpc_tables("tpch", sf=0.01, rows=60, seed=2), variants=2, seed=11)
    got, correct, total = {}, 0, 0
    for i, t in enumerate(tasks):
        res = map_columns(t.source, t.target)
        got[f"{t.table}#{i}"] = {r["source"]: r["target"] for r in res}
        for r in res:
            if r["source"] in t.gold:
                total += 1
                correct += r["target"] in t.gold[r["source"]]
    assert correct / total >= 0.9
    assert got == golden("mapper_tpch.json", got)


def test_review_queue_learns(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path}/meta.db")
    src = [{"name": "xq_7", "samples": ["DE", "FR", "US"]}, {"name": "eMailAddr", "samples": ["a@x.com"]}]
    first = map_columns(src, DEMO_TARGET, store=store, target_table="silver.customers", review_threshold=0.0)
    queued = store.list("pending")
    assert any(q["source_column"] == "xq_7" for q in queued) or first[0]["status"] == "accepted"
    item = next((q for q in queued if q["source_column"] == "xq_7"), None)
    if item is not None:
        store.fix(item["id"], "country")
    else:
        store.remember("xq_7", "country", target_table="silver.customers", verdict="fixed")
    again = map_columns(src, DEMO_TARGET, store=store, target_table="silver.customers")
    assert again[0]["target"] == "country" and again[0]["status"] == "learned" and again[0]["confidence"] == 1.0
    assert store.silver_columns("silver.customers")["country"]["source"] == "xq_7"


# ---------------------------------------------------------------------- TPC-H NL-to-SQL golden
def test_nl2sql_tpch_golden():
    pytest.importorskip("duckdb_extension_tpch")
    import duckdb

    from eai_ray.processing.mapping.fabricate import extension_path
    from eai_ray.processing.sql import fetch_arrow

    con = duckdb.connect()
    con.execute(f"LOAD '{extension_path('tpch')}'")
    con.execute("CALL dbgen(sf=0.002)")
    tables = {f"silver.{t}": fetch_arrow(con.execute(f"SELECT * FROM {t}"))
              for t in ("lineitem", "orders", "customer", "nation", "region", "supplier", "part")}
    model = SemanticModel.load(REPO / "configs/semantic/tpch.yaml")
    linker = nl2sql.Linker(model, values=nl2sql.dimension_values(model, tables=tables))
    cases = yaml.safe_load((REPO / "tests/fixtures/nl2sql_tpch.yaml").read_text())[:20]
    got = {}
    for c in cases:
        a = nl2sql.answer(c["q"], catalog=tables, semantic=model, linker=linker, today=dt.date(1998, 8, 2))
        assert a["valid"], (c["q"], a["error"])
        got[c["q"]] = a["sql"]
    assert got == golden("nl2sql_tpch.json", got)


# ---------------------------------------------------------------------- NL-to-SQL: general constructions
def _plan(q, model, tables):
    linker = nl2sql.Linker(model, values=nl2sql.dimension_values(model, tables=tables))
    return nl2sql.parse_question(q, model, linker, today=dt.date(2026, 6, 1))


def test_adhoc_aggregates_and_value_lists(demo_tables, demo_model):
    p = _plan("what are the earliest and latest order dates", demo_model, demo_tables)
    assert [a[2] for a in p.aggregates] == ["min", "max"] and {a[1] for a in p.aggregates} == {"orders.ordered_at"}
    a = nl2sql.answer("what are the earliest and latest order dates", catalog=demo_tables, semantic=demo_model)
    assert a["valid"] and len(a["rows"]) == 1 and len(a["rows"][0]) == 2
    dates = demo_tables["silver.orders"].column("ordered_at").to_pylist()
    assert sorted(a["rows"][0].values()) == [min(dates), max(dates)]
    # two values of one column are either/or, never both
    p = _plan("revenue from customers in DE or FR", demo_model, demo_tables)
    assert [(f.field, f.op, sorted(f.value)) for f in p.filters] == [("customers.country", "in", ["DE", "FR"])]


def test_unexplained_words_lower_the_confidence(demo_tables, demo_model):
    plain = nl2sql.answer("revenue by country", catalog=demo_tables, semantic=demo_model)
    odd = nl2sql.answer("revenue by country excluding refunded warranty claims", catalog=demo_tables,
                        semantic=demo_model)
    assert {"refunded", "warranty", "claims"} <= set(odd["plan"]["unexplained"])
    assert not plain["plan"]["unexplained"]
    assert 0 < odd["confidence"] < plain["confidence"] <= 1
    assert len(odd["confidence_features"]) == len(nl2sql.FEATURES)
