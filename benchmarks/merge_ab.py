"""A/B of eai_ray.storage.tables.merge: the working tree against the same file at a git ref.

For a change to tables.py whose cost must be compared on a busy machine, where absolute times
mean little: both versions merge the same changes (benchmarks/merge.py's data) into fresh,
identical tables, alternately (ABBA order by round), and each result is checked against the
expected table. Prints each run, the medians, and
``RESULT merge_ab new=<changes/s> old=<changes/s> ratio=<new/old>`` (higher is better).

    .venv/bin/python benchmarks/merge_ab.py                   # HEAD vs working tree, 100k into 1M, 3 rounds
    .venv/bin/python benchmarks/merge_ab.py --ref HEAD~1 --rounds 5
    .venv/bin/python benchmarks/merge_ab.py --quick           # 10k into 100k
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import REPO, result_line, say  # noqa: E402
from merge import KEY, NAME, SEQ, check_equal, expected_result, fresh_table, make_data, read_sorted  # noqa: E402


def tables_at(ref: str):
    """eai_ray/storage/tables.py as it is at git `ref`, imported as a module of its own."""
    src = subprocess.run(["git", "show", f"{ref}:eai_ray/storage/tables.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    d = tempfile.mkdtemp(prefix="eai-bench-ab-")
    path = os.path.join(d, "tables_at_ref.py")
    with open(path, "w") as f:
        f.write(src)
    name = "eai_bench_tables_at_ref"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def one_run(module, base, changes, want, check: bool) -> tuple[float, bool]:
    cat, d = fresh_table(base)
    try:
        t0 = time.perf_counter()
        module.merge(cat, NAME, changes, keys=[KEY], sequence_by=SEQ, run_id="bench")
        took = time.perf_counter() - t0
        ok = check_equal(f"{module.__name__} == expected", read_sorted(cat), want) if check else True
        return took, ok
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="HEAD", help="git ref whose tables.py is the old side")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--insert-frac", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=3, help="runs per side, interleaved")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="10k changes into 100k rows")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.changes = 100_000, 10_000

    from eai_ray.storage import tables as new

    old = tables_at(args.ref)
    say(f"merge A/B: tables.py at {args.ref} (old) vs working tree (new); {args.changes:,} changes into "
        f"{args.rows:,} rows, {args.rounds} rounds, ABBA order")
    base, changes = make_data(args.rows, args.changes, args.insert_frac, args.seed)
    want = expected_result(base, changes)
    times: dict[str, list[float]] = {"old": [], "new": []}
    ok = True
    for r in range(args.rounds):
        order = [("old", old), ("new", new)] if r % 2 == 0 else [("new", new), ("old", old)]
        for label, module in order:
            took, good = one_run(module, base, changes, want, check=(r < 2))
            ok &= good
            times[label].append(took)
            say(f"  round {r + 1} {label}: {took:.2f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in ("old", "new"):
        say(f"{k}: median {med[k]:.2f} s over {', '.join(f'{t:.2f}' for t in times[k])} "
            f"-> {args.changes / med[k]:,.0f} changes/s")
    say(f"new time / old time = {med['new'] / med['old']:.3f}")
    if not ok:
        say("CHECK FAILED: results differ (see above)")
    print(result_line("merge_ab", args.changes / med["new"], args.changes / med["old"]).replace(
        "ours=", "new=").replace("baseline=", "old="), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
