"""`map_columns`: source columns (names, samples) -> target schema, each with a calibrated confidence.

Pipeline: learned exact matches from the review store -> features (embeddings of names,
descriptions and values; tokens, abbreviations, edit distance; types, formats, value overlap,
numeric ranges) -> calibrated scorer -> one-to-one assignment (Hungarian) -> LLM disambiguation of
close calls (when an LLM is given) -> statuses; the uncertain ones are queued for review.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from eai_ray.processing.mapping.features import FEATURES, describe, embed, pair_features
from eai_ray.processing.mapping.limits import MapLimits, MappingInvalid, TokenCounter
from eai_ray.processing.mapping.pairwise import Checkpoint, no_checkpoint
from eai_ray.processing.mapping.scorer import Scorer, default_encoder

MappingStatus = Literal["learned", "accepted", "review", "unmatched"]
_FI = {f: i for i, f in enumerate(FEATURES)}


RETRAIN_EVERY = 10


def map_columns(source_columns: list[dict[str, Any]], target_schema: list[dict[str, Any]], *, store=None,
                source_table: str = "", target_table: str = "", llm=None, accept_threshold: float = 0.8,
                review_threshold: float = 0.3, min_confidence: float = 0.05, scorer: Scorer | None = None,
                encode=None, enqueue: bool = True, limits: MapLimits | None = None,
                count_tokens: TokenCounter | None = None,
                checkpoint: Checkpoint = no_checkpoint) -> list[dict[str, Any]]:
    """Map each source column to at most one target column.

    `source_columns`: [{name, samples, description?, type?}]; `target_schema`: [{name, type,
    description?, samples?}]. Returns one dict per source column, in input order:
    {source, target, confidence, rationale, status} where status is "learned" (a reviewer's answer),
    "accepted" (confidence >= accept_threshold), "review" (queued in `store` when given) or
    "unmatched" (target None). Pure apart from the optional `store`.

    `limits` (a server's): the request is refused with `MappingTooLarge` before any work when it is
    over one, and at most `limits.max_llm_calls` close calls go to the LLM. `checkpoint` is called
    between stages and blocks of work; whatever it raises (a deadline passed, the client left) stops
    the mapping there.

    Example::

        map_columns([{"name": "cust_email", "samples": ["a@x.com"]}],
                    [{"name": "email", "type": "string"}, {"name": "id", "type": "int64"}])
        # [{'source': 'cust_email', 'target': 'email', 'confidence': 0.97, 'status': 'accepted', ...}]
    """
    _check(source_columns, "source_columns")
    _check(target_schema, "target_schema")
    if limits is not None:
        limits.check_columns(source_columns, target_schema)
    encode = encode or default_encoder()
    learned = store.learned(target_table=target_table) if store is not None else []
    pairs = store.training_pairs() if store is not None else []
    # a reviewer's answer applies at once as an exact match (below); the scorer itself retrains only on
    # every RETRAIN_EVERY-th answer, so an approval does not cost a retraining on the next call
    pairs = pairs[: len(pairs) // RETRAIN_EVERY * RETRAIN_EVERY]
    scorer = scorer or Scorer.default(learned=pairs, encode=encode)
    tnames = [t["name"] for t in target_schema]
    out: list[dict[str, Any] | None] = [None] * len(source_columns)

    # 1. a reviewer's latest verdict for this source column wins
    verdict: dict[str, dict[str, Any]] = {}
    for r in learned:
        if r["source_table"] in ("", source_table):
            verdict[r["source_column"].lower()] = r
    rejected: set[tuple[str, str]] = set()
    pinned_targets: set[str] = set()
    for i, c in enumerate(source_columns):
        r = verdict.get(c["name"].lower())
        if r is None:
            continue
        if r["verdict"] == "rejected":
            rej = (r["payload"] or {}).get("rejected_target")
            if rej:
                rejected.add((c["name"].lower(), rej))
            continue
        if r["target_column"] in tnames and r["target_column"] not in pinned_targets:
            pinned_targets.add(r["target_column"])
            out[i] = {"source": c["name"], "target": r["target_column"], "confidence": 1.0,
                      "rationale": f"learned: {r['verdict']} by a reviewer (review {r.get('review_id') or '-'})",
                      "status": "learned"}

    # 2. score the rest
    todo = [i for i, o in enumerate(out) if o is None]
    free_t = [j for j, t in enumerate(tnames) if t not in pinned_targets]
    if todo and free_t:
        src_d = describe([source_columns[i] for i in todo])
        tgt_d = describe([target_schema[j] for j in free_t])
        if limits is not None:  # the embedding budget is known before the model runs
            limits.check_embedding(src_d.texts() + tgt_d.texts(), count_tokens)
        checkpoint()
        src, tgt = embed(src_d, encode), embed(tgt_d, encode)
        checkpoint()
        F = pair_features(src, tgt, checkpoint=checkpoint)
        checkpoint()
        # annotated: numpy's stubs take reshape(<tuple of unknown length>) for a 0-d result
        P: np.ndarray = scorer.predict(F.reshape(-1, F.shape[-1])).reshape(F.shape[:2])
        _zero_rejected(P, rejected, [source_columns[i]["name"].lower() for i in todo], [tnames[j] for j in free_t])
        checkpoint()
        assign = _assign(P, min_confidence)
        notes: dict[int, str] = {}
        if llm is not None:
            assign, notes = _disambiguate(llm, P, assign, src, tgt, learned, tnames=[tnames[j] for j in free_t],
                                          max_calls=limits.max_llm_calls if limits is not None else None,
                                          checkpoint=checkpoint)
        for a, i in enumerate(todo):
            b = assign.get(a)
            name = source_columns[i]["name"]
            if b is None:
                best = int(np.argmax(P[a])) if P.shape[1] else None
                hint = f"; best candidate {tnames[free_t[best]]} at {P[a, best]:.2f}" if best is not None else ""
                out[i] = {"source": name, "target": None, "confidence": round(float(1 - (P[a].max() if P.shape[1] else 0)), 4),
                          "rationale": f"no target column is likely enough{hint}", "status": "unmatched"}
                continue
            conf = float(P[a, b])
            status: MappingStatus = "accepted" if conf >= accept_threshold else (
                "review" if conf >= review_threshold else "unmatched")
            why = _rationale(F[a, b], src, tgt, a, b) + (f"; {notes[a]}" if a in notes else "")
            out[i] = entry = {"source": name, "target": tnames[free_t[b]] if status != "unmatched" else None,
                              "confidence": round(conf, 4), "rationale": why if status != "unmatched" else
                              f"best candidate {tnames[free_t[b]]} is too unlikely ({conf:.2f}): {why}", "status": status}
            if status == "review":
                entry["_payload"] = _payload(source_columns[i], target_schema[free_t[b]])
    for i, o in enumerate(out):
        if o is None:
            out[i] = {"source": source_columns[i]["name"], "target": None, "confidence": 1.0,
                      "rationale": "every target column is taken", "status": "unmatched"}

    # 3. queue the uncertain ones
    results = [dict(o) for o in out]  # type: ignore[arg-type]
    if store is not None and enqueue:
        queue = [o for o in results if o["status"] == "review"]
        if queue:
            ids = store.enqueue([{"source": o["source"], "target": o["target"], "confidence": o["confidence"],
                                  "rationale": o["rationale"], "payload": o.get("_payload")} for o in queue],
                                source_table=source_table, target_table=target_table)
            for o, rid in zip(queue, ids):
                o["review_id"] = rid
    for o in results:
        o.pop("_payload", None)
    return results


def _check(cols: Any, what: str) -> None:
    if not isinstance(cols, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"]
                                             for c in cols):
        raise MappingInvalid(f"{what} must be a list of objects with a non-empty 'name'")
    names = [c["name"] for c in cols]
    if len(set(names)) != len(names):
        raise MappingInvalid(f"{what} has duplicate column names")


def _zero_rejected(P: np.ndarray, rejected: set[tuple[str, str]], sources: list[str], targets: list[str]) -> None:
    """A pair a reviewer rejected gets probability 0 (looked up per rejection, not per pair)."""
    if not rejected:
        return
    rows: dict[str, list[int]] = {}
    for a, s in enumerate(sources):
        rows.setdefault(s, []).append(a)
    cols: dict[str, list[int]] = {}
    for b, t in enumerate(targets):
        cols.setdefault(t, []).append(b)
    for s, t in rejected:
        for a in rows.get(s, ()):
            P[a, cols.get(t, [])] = 0.0


def _assign(P: np.ndarray, floor: float) -> dict[int, int]:
    """One-to-one assignment maximising the total probability; pairs under `floor` are dropped."""
    from scipy.optimize import linear_sum_assignment

    if P.size == 0:
        return {}
    rows, cols = linear_sum_assignment(-P)
    return {int(r): int(c) for r, c in zip(rows, cols) if P[r, c] >= floor}


def _payload(s: dict[str, Any], t: dict[str, Any]) -> dict[str, Any]:
    return {"source_samples": [str(v) for v in (s.get("samples") or [])[:10]], "source_type": s.get("type"),
            "target_samples": [str(v) for v in (t.get("samples") or [])[:10]], "target_type": t.get("type")}


def _rationale(f: np.ndarray, src, tgt, a: int, b: int) -> str:
    parts = [f"name '{src.columns[a]['name']}' ~ '{tgt.columns[b]['name']}' "
             f"(as '{src.phrases[a]}' / '{tgt.phrases[b]}': cosine {f[_FI['name_cos']]:.2f}, "
             f"token overlap {f[_FI['soft_jaccard']]:.2f})"]
    if f[_FI["desc_cos"]] > f[_FI["name_cos"]] + 0.05:
        parts.append(f"description cosine {f[_FI['desc_cos']]:.2f}")
    ps, pt = src.profiles[a], tgt.profiles[b]
    parts.append(f"types {ps.family}/{pt.family}")
    if f[_FI["shape_sim"]] > 0.5 and ps.shapes:
        parts.append(f"same value format ({max(ps.shapes, key=ps.shapes.get)})")
    if f[_FI["value_contain"]] > 0:
        parts.append(f"{f[_FI['value_contain']]:.0%} of sample values shared")
    if f[_FI["both_numeric"]] and f[_FI["range_overlap"]] > 0.3:
        parts.append(f"numeric ranges overlap {f[_FI['range_overlap']]:.0%}")
    if f[_FI["value_cos"]] > 0.6:
        parts.append(f"similar values (cosine {f[_FI['value_cos']]:.2f})")
    return "; ".join(parts)


def _disambiguate(llm, P: np.ndarray, assign: dict[int, int], src, tgt, learned, *, tnames: list[str],
                  margin: float = 0.15, floor: float = 0.2, max_calls: int | None = None,
                  checkpoint: Checkpoint = no_checkpoint) -> tuple[dict[int, int], dict[int, str]]:
    """Ask the LLM to choose between the two best targets when their scores are close.

    A choice is only taken when it names one of the offered candidates and that target is free.
    After ``max_calls`` completions the remaining close calls keep the scorer's answer.
    """
    notes: dict[int, str] = {}
    calls = 0
    taken = {b: a for a, b in assign.items()}
    shots = [f"- source '{r['source_column']}' -> target '{r['target_column']}'" for r in learned
             if r["verdict"] in ("approved", "fixed") and r["target_column"]][-5:]
    for a in range(P.shape[0]):
        order = np.argsort(-P[a])
        if len(order) < 2:
            continue
        b1, b2 = int(order[0]), int(order[1])
        if P[a, b1] < floor or P[a, b1] - P[a, b2] > margin:
            continue
        if max_calls is not None and calls >= max_calls:
            notes[a] = f"close call not sent to the LLM (at most {max_calls} per request)"
            continue
        checkpoint()
        calls += 1
        cands = [b1, b2]
        lines = [f"{k}) {tnames[b]} ({tgt.profiles[b].family}; e.g. {tgt.profiles[b].sample_text[:60]})"
                 for k, b in zip("AB", cands)]
        prompt = ("You match database columns. Answer with one letter: A, B, or N for neither.\n"
                  + ("Earlier approved matches:\n" + "\n".join(shots) + "\n" if shots else "")
                  + f"Source column '{src.columns[a]['name']}' ({src.profiles[a].family}; e.g. "
                  f"{src.profiles[a].sample_text[:80]}).\nWhich target column holds the same data?\n"
                  + "\n".join(lines) + "\nAnswer:")
        try:
            text = llm.complete(prompt, max_tokens=3, temperature=0.0, stop=["\n"], timeout=20).text
        except Exception as exc:  # the LLM is an optional helper: a failure keeps the scorer's answer
            notes[a] = f"LLM disambiguation failed ({type(exc).__name__})"
            continue
        m = re.search(r"\b([ABN])\b", text.strip().upper())
        if not m or m.group(1) == "N":
            continue
        choice = cands["AB".index(m.group(1))]
        current = assign.get(a)
        if choice == current:
            notes[a] = f"LLM confirmed {tnames[choice]} over {tnames[b2 if choice == b1 else b1]}"
            continue
        if choice in taken and taken[choice] != a:
            continue
        if current is not None:
            taken.pop(current, None)
        assign[a] = choice
        taken[choice] = a
        notes[a] = f"LLM chose {tnames[choice]} over {tnames[current] if current is not None else 'none'}"
    return assign, notes
