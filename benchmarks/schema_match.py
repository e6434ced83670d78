"""Schema matching on Valentine-style pairs fabricated from TPC-H and TPC-DS tables NOT used for
training (the shipped scorer trains on the TPC-DS tables in fabricate.TPCDS_TRAIN only).

Ours: `map_columns` (embeddings + features + calibrated scorer + Hungarian). Baseline: plain name
similarity (Jaccard-Levenshtein) with the same one-to-one assignment and a threshold of 0.5.
Precision/recall/F1 over the gold correspondences; MRR of the gold target in each source column's ranking.

    .venv/bin/python benchmarks/schema_match.py [--variants 4]
Last line: RESULT schema_match ours=<F1> baseline=<F1> ratio=<x>
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from eai_ray.processing.mapping import names as N  # noqa: E402
from eai_ray.processing.mapping.fabricate import TPCDS_HOLDOUT, fabricate, tpc_tables  # noqa: E402
from eai_ray.processing.mapping.features import pair_features, prepare  # noqa: E402
from eai_ray.processing.mapping.matcher import map_columns  # noqa: E402
from eai_ray.processing.mapping.scorer import Scorer, default_encoder  # noqa: E402


def prf(tasks, predictions):
    tp = fp = fn = 0
    for t, pred in zip(tasks, predictions):
        for s, g in t.gold.items():
            if pred.get(s) in g:
                tp += 1
            else:
                fn += 1
        fp += sum(1 for s, tg in pred.items() if tg is not None and tg not in t.gold.get(s, ()))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def mrr(tasks, score_mats):
    rr = []
    for t, S in zip(tasks, score_mats):
        tn = [c["name"] for c in t.target]
        for i, c in enumerate(t.source):
            g = t.gold.get(c["name"])
            if not g:
                continue
            # pessimistic rank: ties with the gold target count against it (calibrated scores tie)
            ranks = [1 + int(np.sum(S[i] >= S[i, tn.index(x)])) - 1 for x in g if x in tn]
            rr.append(1.0 / min(ranks) if ranks else 0.0)
    return float(np.mean(rr)) if rr else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()
    t0 = time.perf_counter()
    suites = {"tpch": fabricate(tpc_tables("tpch", sf=0.01, rows=80, seed=1), variants=args.variants, seed=args.seed),
              "tpcds-holdout": fabricate(tpc_tables("tpcds", sf=0.1, rows=80, seed=1, only=TPCDS_HOLDOUT),
                                         variants=args.variants, seed=args.seed + 1)}
    print(f"fabricated {sum(map(len, suites.values()))} held-out tasks in {time.perf_counter() - t0:.1f} s", flush=True)
    enc = default_encoder()
    t1 = time.perf_counter()
    scorer = Scorer.default(encode=enc)
    print(f"scorer ready in {time.perf_counter() - t1:.1f} s (trained on {scorer.trained_on} pairs)", flush=True)
    all_tasks, ours_pred, base_pred, ours_S, base_S = [], [], [], [], []
    for name, tasks in suites.items():
        op, bp, oS, bS = [], [], [], []
        t2 = time.perf_counter()
        for t in tasks:
            res = map_columns(t.source, t.target, scorer=scorer, encode=enc)
            op.append({r["source"]: r["target"] for r in res if r["target"] is not None and r["confidence"] >= 0.5})
            src, tgt = prepare(t.source, enc), prepare(t.target, enc)
            F = pair_features(src, tgt)
            oS.append(scorer.predict(F.reshape(-1, F.shape[-1])).reshape(F.shape[:2]))
            sp, tp_ = N.common_prefix([c["name"] for c in t.source]), N.common_prefix([c["name"] for c in t.target])
            B = np.array([[N.name_similarity(s["name"], c["name"], sp, tp_) for c in t.target] for s in t.source])
            rows, cols = linear_sum_assignment(-B)
            bp.append({t.source[r]["name"]: t.target[c]["name"] for r, c in zip(rows, cols) if B[r, c] >= 0.5})
            bS.append(B)
        dt_ = time.perf_counter() - t2
        po, ro, fo = prf(tasks, op)
        pb, rb, fb = prf(tasks, bp)
        print(f"{name}: {len(tasks)} tasks, {sum(len(t.gold) for t in tasks)} gold pairs, {dt_:.1f} s\n"
              f"  ours     P={po:.3f} R={ro:.3f} F1={fo:.3f} MRR={mrr(tasks, oS):.3f}\n"
              f"  baseline P={pb:.3f} R={rb:.3f} F1={fb:.3f} MRR={mrr(tasks, bS):.3f}", flush=True)
        all_tasks += tasks
        ours_pred += op
        base_pred += bp
        ours_S += oS
        base_S += bS
    po, ro, fo = prf(all_tasks, ours_pred)
    pb, rb, fb = prf(all_tasks, base_pred)
    print(f"all held-out: ours P={po:.3f} R={ro:.3f} F1={fo:.3f} MRR={mrr(all_tasks, ours_S):.3f}; "
          f"baseline P={pb:.3f} R={rb:.3f} F1={fb:.3f} MRR={mrr(all_tasks, base_S):.3f}")
    print(f"RESULT schema_match ours={fo:.3f} baseline={fb:.3f} ratio={fo / fb if fb else float('inf'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
