"""Soak: the randomized CDC kill test, N times in a row per mode, with fresh seeds (not part of CI).

Each run is ``pytest tests/integration/test_cdc_kill.py::test_cdc_survives_random_kills[<mode>]``
in its own process (its own private PostgreSQL/MariaDB/broker and Ray), with ``EAI_CDC_SEED`` set
to a fresh seed and ``EAI_CDC_TRACE`` to a per-run trace file. At the end: a tally per mode and
the failing seeds, with the line that says why. Rerun a failure with the printed command.

Example::

    .venv/bin/python benchmarks/cdc_soak.py --runs 20                       # 4 modes x 20 = 80 runs
    .venv/bin/python benchmarks/cdc_soak.py --runs 5 --modes mariadb-kafka,postgres-kafka --kill-seconds 30
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ["postgres-direct", "mariadb-direct", "postgres-kafka", "mariadb-kafka"]
TEST = "tests/integration/test_cdc_kill.py::test_cdc_survives_random_kills"


def run_once(mode: str, seed: int, *, out_dir: Path, kill_seconds: float | None, timeout_s: float) -> dict:
    log = out_dir / f"{mode}-{seed}.log"
    trace = out_dir / f"{mode}-{seed}.trace.jsonl"
    env = {**os.environ, "EAI_CDC_SEED": str(seed), "EAI_CDC_TRACE": str(trace)}
    if kill_seconds:
        env["EAI_CDC_KILL_SECONDS"] = str(kill_seconds)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-s", "-p", "no:cacheprovider", f"{TEST}[{mode}]"]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc = "timeout"
    log.write_text(text)
    kills = re.search(r"kills=(\{[^}]*\}) total=(\d+)", text)
    changes = re.search(r"\(total (\d+)\)", text)
    why = ""
    if rc != 0:
        for pat in (r"NOT CAUGHT UP", r"AssertionError: ([^\n]+)", r"E\s+(assert [^\n]+)", r"(\w+Error: [^\n]+)"):
            m = re.search(pat, text)
            if m:
                why = m.group(0)[:200]
                break
    return {"mode": mode, "seed": seed, "ok": rc == 0, "rc": rc, "seconds": round(time.time() - t0, 1),
            "kills": int(kills.group(2)) if kills else None, "changes": int(changes.group(1)) if changes else None,
            "why": why, "log": str(log), "trace": str(trace)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per mode (default 20)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {MODES}")
    ap.add_argument("--kill-seconds", type=float, default=None, help="EAI_CDC_KILL_SECONDS (workload length)")
    ap.add_argument("--out", default="/tmp/eai-cdc-soak", help="folder for each run's log and trace")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    ap.add_argument("--seed", type=int, default=None, help="seed of the seed generator (default: fresh)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown modes {unknown}; choose from {MODES}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    results: list[dict] = []
    for mode in modes:
        for i in range(args.runs):
            seed = rng.randrange(1 << 30)
            r = run_once(mode, seed, out_dir=out, kill_seconds=args.kill_seconds, timeout_s=args.timeout)
            results.append(r)
            print(f"[{mode} {i + 1}/{args.runs}] seed={seed} {'PASS' if r['ok'] else 'FAIL'} {r['seconds']}s "
                  f"kills={r['kills']} changes={r['changes']} {r['why']}", flush=True)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(r) + "\n")
    print("\n| mode | runs | passed | failed | failing seeds |\n| --- | --- | --- | --- | --- |")
    for mode in modes:
        rs = [r for r in results if r["mode"] == mode]
        bad = [r for r in rs if not r["ok"]]
        print(f"| {mode} | {len(rs)} | {len(rs) - len(bad)} | {len(bad)} | "
              f"{', '.join(str(r['seed']) for r in bad) or '-'} |")
    for r in (r for r in results if not r["ok"]):
        print(f"\nFAILED {r['mode']} seed={r['seed']}: {r['why']}\n  log: {r['log']}\n  trace: {r['trace']}\n"
              f"  rerun: EAI_CDC_SEED={r['seed']} {sys.executable} -m pytest -x -q -s '{TEST}[{r['mode']}]'")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
