"""NL-to-SQL execution accuracy on TPC-H: ours (semantic-layer grounded, embeddings) vs the bare LLM
prompted with the schema. Questions and reference SQL: tests/fixtures/nl2sql_tpch.yaml.

TPC-H (sf 0.01) is generated offline by DuckDB, written to Iceberg tables (silver.*, SQLite
catalog in a temp folder) and every answer is executed read-only on them.

    .venv/bin/python benchmarks/nl2sql.py [--sf 0.01] [--baseline-llm local|none]
Last line: RESULT nl2sql ours=<acc> baseline=<acc> ratio=<x>
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from eai_ray.processing import nl2sql  # noqa: E402
from eai_ray.processing.sql import fetch_arrow  # noqa: E402
from eai_ray.storage.semantic import SemanticModel  # noqa: E402

TODAY = dt.date(1998, 8, 2)
TPCH = ("lineitem", "orders", "customer", "nation", "region", "supplier", "part", "partsupp")


def tpch_iceberg(sf: float, folder: str):
    import duckdb
    from pyiceberg.catalog.sql import SqlCatalog

    from eai_ray.processing.mapping.fabricate import extension_path

    con = duckdb.connect()
    con.execute(f"LOAD '{extension_path('tpch')}'")
    con.execute(f"CALL dbgen(sf={sf})")
    cat = SqlCatalog("bench", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}/warehouse")
    cat.create_namespace("silver")
    for t in TPCH:
        data = fetch_arrow(con.execute(f"SELECT * FROM {t}"))
        tbl = cat.create_table(f"silver.{t}", schema=data.schema)
        tbl.append(data)
    con.execute("CREATE SCHEMA silver")
    for t in TPCH:
        con.execute(f"CREATE VIEW silver.{t} AS SELECT * FROM main.{t}")
    return cat, con


def _norm(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if hasattr(v, "is_finite"):  # Decimal
        return f"{float(v):.6g}"
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()[:10]
    return str(v)


def same_result(got_rows: list[dict], ref_rows: list[tuple], ordered: bool) -> bool:
    got = [tuple(sorted(_norm(v) for v in r.values())) for r in got_rows]
    ref = [tuple(sorted(_norm(v) for v in r)) for r in ref_rows]
    return got == ref if ordered else Counter(got) == Counter(ref)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sf", type=float, default=0.01)
    ap.add_argument("--baseline-llm", default="local", help="backend for the bare-LLM baseline (local|openai|none)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions")
    args = ap.parse_args()
    import tempfile
    cases = yaml.safe_load((REPO / "tests/fixtures/nl2sql_tpch.yaml").read_text())
    if args.limit:
        cases = cases[: args.limit]
    folder = tempfile.mkdtemp(prefix="eai-bench-nl2sql-")
    t0 = time.perf_counter()
    catalog, con = tpch_iceberg(args.sf, folder)
    print(f"TPC-H sf={args.sf} in Iceberg: {time.perf_counter() - t0:.1f} s; {len(cases)} questions", flush=True)
    model = SemanticModel.load(REPO / "configs/semantic/tpch.yaml")
    values = nl2sql.dimension_values(model, catalog=catalog)
    linker = nl2sql.Linker(model, values=values)
    ours = base = 0
    t1 = time.perf_counter()
    for c in cases:
        ref = con.execute(c["sql"]).fetchall()
        ans = nl2sql.answer(c["q"], catalog=catalog, semantic=model, linker=linker, today=TODAY, limit=10000)
        ok = ans["valid"] and same_result(ans["rows"], ref, c.get("ordered", False))
        ours += ok
        print(f"  [{'ok' if ok else 'XX'}] {c['q']}  conf={ans['confidence']}"
              + ("" if ok else f"\n       plan={ans['plan']}\n       sql={ans['sql']}\n       error={ans['error']}"),
              flush=True)
    t_ours = time.perf_counter() - t1
    print(f"ours: {ours}/{len(cases)} in {t_ours:.1f} s", flush=True)
    llm = None
    if args.baseline_llm != "none":
        from eai_ray.processing.models.llm import llm_from_config
        llm = llm_from_config(args.baseline_llm)
    if llm is not None:
        schema = nl2sql.catalog_schema(catalog)
        t2 = time.perf_counter()
        for c in cases:
            ref = con.execute(c["sql"]).fetchall()
            try:
                sql = nl2sql.llm_sql(c["q"], schema, llm)
                res = nl2sql._check_and_run(sql, schema, catalog, execute=True, limit=10000)
                ok = res.get("error") is None and same_result(res.get("rows", []), ref, c.get("ordered", False))
            except Exception as exc:  # a failing baseline answer counts as wrong
                sql, ok = f"<{type(exc).__name__}: {exc}>", False
            base += ok
            print(f"  baseline [{'ok' if ok else 'XX'}] {c['q']} -> {sql[:120]!r}", flush=True)
        print(f"baseline ({getattr(llm, 'model', llm)}): {base}/{len(cases)} in {time.perf_counter() - t2:.1f} s")
    n = len(cases)
    acc_o, acc_b = ours / n, base / n
    # a baseline that answers nothing right is floored at one answer, so the ratio stays finite
    ratio = acc_o / max(acc_b, 1 / n)
    print(f"RESULT nl2sql ours={acc_o:.3f} baseline={acc_b:.3f} ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
