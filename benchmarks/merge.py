"""Silver MERGE throughput: eai_ray.storage.tables.merge vs pyiceberg Table.upsert.

100k changed rows (about 95% updates of existing keys, 5% inserts, keys drawn at random) are merged
into a 1M-row table with an orders-like schema (ints, floats, decimals, strings, dates, timestamps).
Ours and the baseline each get a fresh, identical table per run (set up untimed); both results
are compared in full with the expected table computed independently in polars.

Metric: changes merged per second (median of --runs). ``--big`` also times 1M changes into 10M rows
for ours alone.

    .venv/bin/python benchmarks/merge.py            # 100k into 1M, median of 3
    .venv/bin/python benchmarks/merge.py --quick    # 10k into 100k, one run
    .venv/bin/python benchmarks/merge.py --big      # + 1M into 10M (ours only)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
from _common import median_time, result_line, say, tempdir  # noqa: E402

KEY = "o_orderkey"
SEQ = "updated_at"
NAME = "silver.orders"

SCHEMA = pa.schema([
    (KEY, pa.int64()),
    ("o_custkey", pa.int64()),
    ("o_orderstatus", pa.string()),
    ("o_totalprice", pa.decimal128(15, 2)),
    ("o_orderdate", pa.date32()),
    ("o_orderpriority", pa.string()),
    ("o_clerk", pa.string()),
    ("o_shippriority", pa.int32()),
    ("o_discount", pa.float64()),
    ("o_comment", pa.string()),
    (SEQ, pa.timestamp("us", tz="UTC")),
])

_WORDS = ("furiously regular deposits sleep carefully final requests haggle quickly express packages "
          "nag slyly ironic accounts boost blithely pending theodolites wake fluffily bold foxes "
          "cajole even pinto beans unusual instructions detect").split()
_PRIORITIES = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"]
_T0 = np.datetime64("2024-01-01T00:00:00", "us")


def _pool(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array([" ".join(rng.choice(_WORDS, size=rng.integers(3, 10))) for _ in range(n)], pa.string())


def make_rows(rng: np.random.Generator, keys: np.ndarray, *, seconds_from: int, comments: pa.Array,
              clerks: pa.Array) -> pa.Table:
    """Orders-like rows for `keys`; strings come from pools by index (no Python per row)."""
    n = len(keys)
    cents = rng.integers(90_00, 500_000_00, n)
    ts = _T0 + rng.integers(seconds_from, seconds_from + 86_400, n).astype("timedelta64[s]")
    cols = [
        pa.array(keys, pa.int64()),
        pa.array(rng.integers(1, 150_000, n), pa.int64()),
        pa.array(np.array(["F", "O", "P"])[rng.integers(0, 3, n)], pa.string()),
        _cents_to_decimal(cents),
        pa.array((np.datetime64("1992-01-01") + rng.integers(0, 2400, n).astype("timedelta64[D]")), pa.date32()),
        pa.array(np.array(_PRIORITIES)[rng.integers(0, 5, n)], pa.string()),
        clerks.take(pa.array(rng.integers(0, len(clerks), n))),
        pa.array(rng.integers(0, 1000, n).astype(np.int32) % 2, pa.int32()),
        pa.array(np.round(rng.random(n) * 0.1, 4), pa.float64()),
        comments.take(pa.array(rng.integers(0, len(comments), n))),
        pa.array(ts.astype("datetime64[us]"), pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
    ]
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def _cents_to_decimal(cents: np.ndarray) -> pa.Array:
    """decimal(15,2) whose unscaled values are `cents`: exact, built from the 128-bit buffer."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)  # two's complement sign extension
    return pa.Array.from_buffers(pa.decimal128(15, 2), len(cents), [None, pa.py_buffer(words.tobytes())])


def make_data(rows: int, changes: int, insert_frac: float, seed: int) -> tuple[pa.Table, pa.Table]:
    """(base table sorted by key, changes in random order: updates of existing keys + new keys)."""
    rng = np.random.default_rng(seed)
    comments, clerks = _pool(rng, 20_000), pa.array([f"Clerk#{i:09d}" for i in range(1, 1001)])
    # sparse keys, like TPC-H orderkeys: new keys land in the gaps as well as above the top
    space = np.arange(1, rows * 4 + 1, dtype=np.int64)
    chosen = rng.choice(space.size, size=rows + changes, replace=False)
    base_keys = np.sort(space[chosen[:rows]])
    new_keys = space[chosen[rows:rows + int(round(changes * insert_frac))]]
    base = make_rows(rng, base_keys, seconds_from=0, comments=comments, clerks=clerks)

    n_upd = changes - len(new_keys)
    upd_idx = rng.choice(rows, size=n_upd, replace=False)
    upd = base.take(pa.array(upd_idx))
    fresh = make_rows(rng, upd.column(KEY).to_numpy(), seconds_from=10 * 86_400, comments=comments, clerks=clerks)
    # an update changes status, price, discount, comment and the sequence; the rest stays
    for col in ("o_orderstatus", "o_totalprice", "o_discount", "o_comment", SEQ):
        i = SCHEMA.get_field_index(col)
        upd = upd.set_column(i, SCHEMA.field(col), fresh.column(col))
    ins = make_rows(rng, new_keys, seconds_from=10 * 86_400, comments=comments, clerks=clerks)
    ch = pa.concat_tables([upd, ins])
    ch = ch.take(pa.array(rng.permutation(ch.num_rows)))
    return base, ch.combine_chunks()


def expected_result(base: pa.Table, changes: pa.Table) -> pl.DataFrame:
    b, c = pl.from_arrow(base), pl.from_arrow(changes)
    return pl.concat([b.join(c.select(KEY), on=KEY, how="anti"), c]).sort(KEY)


# ---------------------------------------------------------------------- tables
def fresh_table(base: pa.Table):
    """A new SQLite catalog in a temp dir with silver.orders holding `base` (created the eai way)."""
    from pyiceberg.catalog.sql import SqlCatalog

    from eai_ray.storage import tables as T

    d = tempdir("merge")
    catalog = SqlCatalog("bench", uri=f"sqlite:///{d}/catalog.db", warehouse=f"file://{d}/warehouse")
    catalog.create_namespace("silver")
    T.evolve(catalog, NAME, base.schema)
    T.append(catalog, NAME, base, run_id="setup")
    return catalog, d


def read_sorted(catalog) -> pl.DataFrame:
    return pl.from_arrow(catalog.load_table(NAME).scan().to_arrow()).sort(KEY)


def check_equal(label: str, got: pl.DataFrame, want: pl.DataFrame) -> bool:
    got = got.select(want.columns)
    same_rows = got.height == want.height
    same = same_rows and got.equals(want)
    detail = f"{got.height:,} rows (expected {want.height:,})"
    if same_rows and not same:
        diff = got.join(want, on=list(want.columns), how="anti").height
        detail += f", {diff:,} rows differ"
    say(f"  check {label}: {'OK, full equality after sorting by key' if same else 'MISMATCH'}: {detail}")
    return same


def run_ours(args, base, changes, runs, label="ours"):
    from eai_ray.storage import tables as T

    dirs, stats = [], {}

    def setup():
        cat, d = fresh_table(base)
        dirs.append(d)
        return cat

    def go(cat):
        stats["last"] = T.merge(cat, NAME, changes, keys=[KEY], sequence_by=SEQ, run_id="bench")
        stats["catalog"] = cat
        return stats["last"]

    med, times, _ = median_time(go, runs=runs, setup=setup, label=label)
    say(f"  {label} merge stats: {stats['last'].to_dict()}")
    result = read_sorted(stats["catalog"])
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return med, times, result


def run_baseline(args, base, changes, runs):
    dirs, holder = [], {}

    def setup():
        cat, d = fresh_table(base)
        dirs.append(d)
        return cat

    def go(cat):
        tbl = cat.load_table(NAME)
        res = tbl.upsert(changes.cast(tbl.schema().as_arrow()), join_cols=[KEY])
        holder["catalog"], holder["last"] = cat, res
        return res

    med, times, _ = median_time(go, runs=runs, setup=setup, label="pyiceberg upsert")
    r = holder["last"]
    say(f"  pyiceberg upsert result: updated={r.rows_updated:,} inserted={r.rows_inserted:,}")
    result = read_sorted(holder["catalog"])
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return med, times, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the silver table")
    ap.add_argument("--changes", type=int, default=100_000, help="changed rows merged in")
    ap.add_argument("--insert-frac", type=float, default=0.05, help="share of changes that are new keys")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side (median reported)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smoke run: 10k changes into 100k rows, one run")
    ap.add_argument("--big", action="store_true", help="also time 1M changes into 10M rows, ours only")
    ap.add_argument("--skip-baseline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.changes, args.runs = 100_000, 10_000, 1

    say(f"merge benchmark: {args.changes:,} changes (~{args.insert_frac:.0%} inserts) into {args.rows:,} rows, "
        f"median of {args.runs}")
    t0 = time.perf_counter()
    base, changes = make_data(args.rows, args.changes, args.insert_frac, args.seed)
    want = expected_result(base, changes)
    say(f"generated data in {time.perf_counter() - t0:.1f} s: base {base.num_rows:,} rows, "
        f"changes {changes.num_rows:,}, expected result {want.height:,} rows; schema: "
        + ", ".join(f"{f.name}:{f.type}" for f in SCHEMA))

    say("ours: eai_ray.storage.tables.merge (copy-on-write, polars anti-join)")
    ours_s, _, ours_res = run_ours(args, base, changes, args.runs)
    ok = check_equal("ours == expected", ours_res, want)

    say("baseline: pyiceberg Table.upsert(join_cols=[o_orderkey])")
    base_s, _, base_res = run_baseline(args, base, changes, args.runs)
    ok &= check_equal("baseline == expected", base_res, want)
    ok &= check_equal("ours == baseline", ours_res, base_res.select(want.columns))

    ours_rate, base_rate = args.changes / ours_s, args.changes / base_s
    say(f"ours:     {ours_s:.2f} s median -> {ours_rate:,.0f} changes/s")
    say(f"baseline: {base_s:.2f} s median -> {base_rate:,.0f} changes/s")

    if args.big:
        big_rows, big_changes = 10 * args.rows, 10 * args.changes
        say(f"big: {big_changes:,} changes into {big_rows:,} rows, ours only, one run")
        t1 = time.perf_counter()
        b_base, b_changes = make_data(big_rows, big_changes, args.insert_frac, args.seed + 1)
        b_want = expected_result(b_base, b_changes)
        say(f"  generated in {time.perf_counter() - t1:.1f} s")
        big_s, _, big_res = run_ours(args, b_base, b_changes, 1, label="ours big")
        ok &= check_equal("ours big == expected", big_res, b_want)
        say(f"BIG merge ours={big_changes / big_s:.1f} changes/s ({big_changes:,} changes into "
            f"{big_rows:,} rows in {big_s:.2f} s; no baseline)")
        del b_base, b_changes, b_want, big_res

    if not ok:
        say("CHECK FAILED: results differ (see above)")
    print(result_line("merge", ours_rate, base_rate), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
