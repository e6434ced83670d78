"""Reference answers for the AI layer's tests: the data both sides run on, the reference SQL executed
with the project's own bounded execution (a DuckDB sandbox), and the comparison of result sets.

A generated answer matches its reference when its rows match order-insensitively (unless the case
says ``ordered``), cells compared as sorted values to 6 significant digits; an answer may carry extra
columns (a "which group is largest" question answered with the group and its count). The rule is
eai_ray.processing.result_match, the one benchmarks/nl2sql.py reports its accuracy with.
"""
from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from eai_ray.processing.result_match import same_result
from eai_ray.processing.sql import execute_bounded, fetch_arrow, sandbox

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TPCH_TABLES = ("lineitem", "orders", "customer", "nation", "region", "supplier", "part")


def load_cases(name: str) -> list[dict[str, Any]]:
    """A question set of tests/fixtures: [{q, sql, ordered?}, ...]."""
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def case_id(i: int, question: str) -> str:
    return f"{i:02d}-" + "-".join("".join(ch for ch in w if ch.isalnum()) for w in question.lower().split())[:60]


def demo_tables() -> dict[str, pa.Table]:
    """The demo shop (configs/semantic/demo.yaml): 40 customers, 200 orders, 100 payments, 3 products."""
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


def tpch_tables(sf: float = 0.002) -> dict[str, pa.Table]:
    """TPC-H generated offline by DuckDB's tpch extension, as silver.* Arrow tables."""
    import duckdb

    from eai_ray.processing.mapping.fabricate import extension_path

    con = duckdb.connect()
    try:
        con.execute(f"LOAD '{extension_path('tpch')}'")
        con.execute(f"CALL dbgen(sf={sf})")
        return {f"silver.{t}": fetch_arrow(con.execute(f"SELECT * FROM {t}")) for t in TPCH_TABLES}
    finally:
        con.close()


def reference_rows(sql: str, tables: dict[str, pa.Table]) -> list[tuple]:
    """The reference SQL's rows over `tables`, run in the same sandbox and budget as every query of ours
    (no validation: a reference may use SQL the validator would refuse from a user)."""
    with sandbox() as con:
        for full, data in tables.items():
            ns, name = full.split(".", 1)
            con.register(f"__ref_{ns}_{name}", data)
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{ns}"')
            con.execute(f'CREATE OR REPLACE VIEW "{ns}"."{name}" AS SELECT * FROM "__ref_{ns}_{name}"')
        result = execute_bounded(con, sql)
    return [tuple(r.values()) for r in result.to_pylist()]


def verdict(answer: dict[str, Any], case: dict[str, Any], tables: dict[str, pa.Table]) -> str | None:
    """None when `answer` gives the reference's result; else why not. A refused or unanswered question
    is a failure too, never a pass."""
    if answer.get("refused"):
        return f"refused: {answer['error']}"
    if not answer["valid"]:
        return f"not answered: {answer['error']} (sql: {answer['sql']})"
    ref = reference_rows(case["sql"], tables)
    if same_result(answer["rows"], ref, case.get("ordered", False)):
        return None
    return (f"wrong result:\n  generated: {answer['sql']}\n  rows: {answer['rows'][:5]}"
            f"{' ...' if len(answer['rows']) > 5 else ''} ({len(answer['rows'])})\n  reference: {case['sql']}\n"
            f"  rows: {ref[:5]}{' ...' if len(ref) > 5 else ''} ({len(ref)})")
