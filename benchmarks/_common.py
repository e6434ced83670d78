"""Helpers the benchmarks share: timing, TPC-H generation, PostgreSQL loading, result lines.

Every benchmark measures ours and its baseline in the same process on the same data, and ends
with one line ``RESULT <name> ours=<v> baseline=<v> ratio=<ours/baseline>`` (higher is better).
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_HOST = os.environ.get("EAI_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("EAI_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("EAI_BENCH_PG_USER", "postgres")
PG_DB = os.environ.get("EAI_BENCH_PG_DB", "eai_bench")


# ---------------------------------------------------------------------- output
def say(msg: str) -> None:
    print(msg, flush=True)


def result_line(name: str, ours: float, baseline: float) -> str:
    ratio = ours / baseline if baseline else float("nan")
    return f"RESULT {name} ours={ours:.1f} baseline={baseline:.1f} ratio={ratio:.3f}"


# ---------------------------------------------------------------------- timing
def median_time(fn: Callable[[], Any], *, runs: int, setup: Callable[[], Any] | None = None,
                label: str = "", check: Callable[[Any], None] | None = None) -> tuple[float, list[float], Any]:
    """Median wall time of `fn` over `runs` runs; `setup` runs untimed before each.

    `setup`'s return value, if not None, is passed to `fn`. `check` sees each run's result.
    Returns (median seconds, all times, last result).
    """
    times, result = [], None
    for i in range(runs):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        result = fn(arg) if arg is not None else fn()
        dt_ = time.perf_counter() - t0
        times.append(dt_)
        say(f"  {label} run {i + 1}/{runs}: {dt_:.2f} s")
        if check:
            check(result)
    return statistics.median(times), times, result


@contextmanager
def stopwatch(label: str, sink: dict[str, float] | None = None):
    t0 = time.perf_counter()
    yield
    dt_ = time.perf_counter() - t0
    if sink is not None:
        sink[label] = sink.get(label, 0.0) + dt_
    say(f"  {label}: {dt_:.2f} s")


def tempdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"eai-bench-{prefix}-")


# ---------------------------------------------------------------------- TPC-H
def tpch_extension_path() -> str:
    spec = importlib.util.find_spec("duckdb_extension_tpch")
    if spec is None:
        sys.exit("duckdb-extension-tpch is not installed: pip install -e '.[bench]'")
    root = Path(spec.submodule_search_locations[0])
    found = sorted(root.rglob("tpch.duckdb_extension"))
    if not found:
        sys.exit(f"no tpch.duckdb_extension under {root}")
    return str(found[-1])


def tpch_duckdb(sf: float):
    """An in-memory DuckDB connection holding TPC-H at scale `sf`."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"LOAD '{tpch_extension_path()}'")
    con.execute(f"CALL dbgen(sf={sf})")
    return con


def lineitem_rows(sf: float) -> int:
    if sf == 1:
        return 6_001_215
    if sf == 0.1:
        return 600_572
    if sf == 0.01:
        return 60_175
    return -1  # unknown: counted from the generated data


# ---------------------------------------------------------------------- PostgreSQL
def pg_connect(dbname: str = PG_DB):
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname)


def pg_dsn(dbname: str = PG_DB) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def ensure_database(dbname: str = PG_DB) -> None:
    """CREATE DATABASE once; a concurrent creator winning the race is fine."""
    import psycopg2

    conn = pg_connect("postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                try:
                    cur.execute(f'CREATE DATABASE "{dbname}"')
                    say(f"created database {dbname}")
                except psycopg2.errors.DuplicateDatabase:
                    pass
    finally:
        conn.close()


LINEITEM_DDL = """
CREATE TABLE {name} (
    l_id            bigint PRIMARY KEY,
    l_orderkey      bigint NOT NULL,
    l_partkey       bigint NOT NULL,
    l_suppkey       bigint NOT NULL,
    l_linenumber    integer NOT NULL,
    l_quantity      numeric(15,2) NOT NULL,
    l_extendedprice numeric(15,2) NOT NULL,
    l_discount      numeric(15,2) NOT NULL,
    l_tax           numeric(15,2) NOT NULL,
    l_returnflag    varchar(1) NOT NULL,
    l_linestatus    varchar(1) NOT NULL,
    l_shipdate      date NOT NULL,
    l_commitdate    date NOT NULL,
    l_receiptdate   date NOT NULL,
    l_shipinstruct  varchar(25) NOT NULL,
    l_shipmode      varchar(10) NOT NULL,
    l_comment       varchar(44) NOT NULL
)
"""
LINEITEM_COLUMNS = ["l_id", "l_orderkey", "l_partkey", "l_suppkey", "l_linenumber", "l_quantity",
                    "l_extendedprice", "l_discount", "l_tax", "l_returnflag", "l_linestatus", "l_shipdate",
                    "l_commitdate", "l_receiptdate", "l_shipinstruct", "l_shipmode", "l_comment"]


def lineitem_table_name(sf: float) -> str:
    """`lineitem` at scale 1; other scales get their own table so a --quick run never drops SF1."""
    return "lineitem" if sf == 1 else "lineitem_sf" + f"{sf:g}".replace(".", "_")


def _count(cur, table: str) -> int | None:
    cur.execute("SELECT to_regclass(%s)", (table,))
    if cur.fetchone()[0] is None:
        return None
    cur.execute(f"SELECT count(*) FROM {table}")
    return cur.fetchone()[0]


def _label(sf: float, rows: int) -> str:
    return f"eai benchmarks: TPC-H lineitem sf={sf:g} rows={rows}"


def ensure_lineitem(sf: float) -> tuple[str, int]:
    """TPC-H lineitem at `sf` in PostgreSQL (surrogate key l_id), loaded only when missing or wrong.

    Loads into a staging table and renames it in one transaction, under an advisory lock, so a
    crashed or concurrent load never leaves a half-filled `lineitem` behind.
    """
    ensure_database()
    table = lineitem_table_name(sf)
    expected = lineitem_rows(sf)
    conn = pg_connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"eai_bench.{table}",))
            try:
                have = _count(cur, table)
                if have is not None and expected < 0:  # a scale with no known count: trust our own label
                    cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (table,))
                    expected = have if cur.fetchone()[0] == _label(sf, have) else -1
                if have is not None and have == expected and expected > 0:
                    say(f"PostgreSQL {PG_DB}.{table}: {have:,} rows already loaded")
                    return table, have
                say(f"loading TPC-H lineitem sf={sf:g} into PostgreSQL {PG_DB}.{table} "
                    f"(found {have if have is not None else 'no table'})")
                t0 = time.perf_counter()
                con = tpch_duckdb(sf)
                n = con.execute("SELECT count(*) FROM lineitem").fetchone()[0]
                csv_dir = tempdir("load")
                csv_path = os.path.join(csv_dir, "lineitem.csv")
                con.execute(f"""COPY (SELECT row_number() OVER (ORDER BY l_orderkey, l_linenumber) AS l_id,
                                     {', '.join(LINEITEM_COLUMNS[1:])} FROM lineitem
                                     ORDER BY l_orderkey, l_linenumber)
                                TO '{csv_path}' (FORMAT csv, HEADER false)""")
                con.close()
                say(f"  generated {n:,} rows with duckdb dbgen in {time.perf_counter() - t0:.1f} s")
                staging = f"{table}__loading"
                cur.execute(f"DROP TABLE IF EXISTS {staging}")
                cur.execute("BEGIN")
                cur.execute(LINEITEM_DDL.format(name=staging))
                with open(csv_path, "rb") as f:
                    cur.copy_expert(f"COPY {staging} FROM STDIN WITH (FORMAT csv)", f, size=1 << 20)
                cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute(f"ALTER TABLE {staging} RENAME TO {table}")
                cur.execute(f"ALTER INDEX {staging}_pkey RENAME TO {table}_pkey")
                cur.execute(f"COMMENT ON TABLE {table} IS %s", (_label(sf, n),))
                cur.execute("COMMIT")
                os.remove(csv_path)
                os.rmdir(csv_dir)
                # hint bits and visibility map set now, so the first timed reader pays no write cost;
                # fresh statistics give the connectors a true row estimate
                cur.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
                say(f"  loaded {n:,} rows in {time.perf_counter() - t0:.1f} s")
                return table, n
            finally:
                cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"eai_bench.{table}",))
    finally:
        conn.close()
