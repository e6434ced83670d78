"""Pairwise features between source and target columns for the learned scorer.

Everything here is a pure function of the two column lists (and an embedding function), so the
same features serve training on fabricated pairs and matching at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from eai_ray.processing.mapping import names as N
from eai_ray.processing.mapping.profile import (Profile, numeric_features, pattern_similarity, profile_column,
                                                shape_similarity, type_compatibility, value_overlap)

FEATURE_VERSION = 3
FEATURES = (
    "name_cos", "desc_cos", "value_cos", "cross_cos", "token_jaccard", "soft_jaccard", "lev_tokens",
    "lev_raw", "abbrev", "type_compat", "same_family", "shape_sim", "pattern_sim", "value_jaccard",
    "value_contain", "both_numeric", "range_overlap", "magnitude", "len_ratio", "distinct_diff",
    "row_rank", "col_rank", "row_margin", "col_margin", "base",
)

EncodeFn = Callable[[list[str]], np.ndarray]


@dataclass
class Side:
    """One side of a match: the columns, their profiles, phrases and embeddings."""
    columns: list[dict[str, Any]]
    profiles: list[Profile]
    prefix: str
    phrases: list[str]
    tokens: list[tuple[str, ...]]
    name_vecs: np.ndarray
    desc_vecs: np.ndarray | None
    value_vecs: np.ndarray


def prepare(columns: Sequence[dict[str, Any]], encode: EncodeFn) -> Side:
    cols = [dict(c) for c in columns]
    prefix = N.common_prefix([c["name"] for c in cols])
    toks = [N.tokens(c["name"], prefix) for c in cols]
    phrases = [" ".join(t) or c["name"].lower() for t, c in zip(toks, cols)]
    profiles = [profile_column(c) for c in cols]
    descs = [c.get("description") or "" for c in cols]
    value_texts = [f"{p.sample_text}" or "none" for p in profiles]
    texts = phrases + value_texts + [d for d in descs if d]
    vecs = encode(texts) if texts else np.zeros((0, 384), np.float32)
    n = len(cols)
    name_vecs, value_vecs = vecs[:n], vecs[n:2 * n]
    desc_vecs = None
    if any(descs):
        desc_vecs = name_vecs.copy()  # a column without a description is described by its name
        it = iter(vecs[2 * n:])
        for i, d in enumerate(descs):
            if d:
                desc_vecs[i] = next(it)
    return Side(cols, profiles, prefix, phrases, toks, name_vecs, desc_vecs, value_vecs)


def pair_features(src: Side, tgt: Side) -> np.ndarray:
    """Feature tensor of shape (len(src), len(tgt), len(FEATURES))."""
    ns, nt = len(src.columns), len(tgt.columns)
    F = np.zeros((ns, nt, len(FEATURES)), dtype=np.float32)
    if ns == 0 or nt == 0:
        return F
    name_cos = src.name_vecs @ tgt.name_vecs.T
    sd = src.desc_vecs if src.desc_vecs is not None else src.name_vecs
    td = tgt.desc_vecs if tgt.desc_vecs is not None else tgt.name_vecs
    desc_cos = np.maximum.reduce([name_cos, sd @ td.T, src.name_vecs @ td.T, sd @ tgt.name_vecs.T])
    value_cos = src.value_vecs @ tgt.value_vecs.T
    cross_cos = np.maximum(src.name_vecs @ tgt.value_vecs.T, src.value_vecs @ tgt.name_vecs.T)
    raw_s = [_strip(c["name"], src.prefix) for c in src.columns]
    raw_t = [_strip(c["name"], tgt.prefix) for c in tgt.columns]
    lex = np.zeros((ns, nt, 5), dtype=np.float32)
    val = np.zeros((ns, nt, 11), dtype=np.float32)
    for i in range(ns):
        ps, ts = src.profiles[i], src.tokens[i]
        for j in range(nt):
            pt, tt = tgt.profiles[j], tgt.tokens[j]
            lex[i, j] = (N.jaccard(ts, tt), N.soft_token_jaccard(ts, tt),
                         N.levenshtein_sim("".join(ts), "".join(tt)), N.levenshtein_sim(raw_s[i], raw_t[j]),
                         _abbrev(raw_s[i], raw_t[j], ts, tt))
            vj, vc = value_overlap(ps, pt)
            both, rng, mag = numeric_features(ps, pt)
            len_ratio = (min(ps.mean_len, pt.mean_len) / max(ps.mean_len, pt.mean_len)
                         if max(ps.mean_len, pt.mean_len) > 0 else 0.0)
            val[i, j] = (type_compatibility(ps.family, pt.family), float(ps.family == pt.family),
                         shape_similarity(ps, pt), pattern_similarity(ps, pt), vj, vc, both, rng, mag,
                         len_ratio, abs(ps.distinct_ratio - pt.distinct_ratio))
    base = (0.35 * desc_cos + 0.2 * value_cos + 0.25 * lex[:, :, 1] + 0.2 * val[:, :, 0]).astype(np.float32)
    row_rank, col_rank, row_margin, col_margin = _ranks(base)
    F[:, :, 0], F[:, :, 1], F[:, :, 2], F[:, :, 3] = name_cos, desc_cos, value_cos, cross_cos
    F[:, :, 4:9] = lex
    F[:, :, 9:20] = val
    F[:, :, 20], F[:, :, 21], F[:, :, 22], F[:, :, 23] = row_rank, col_rank, row_margin, col_margin
    F[:, :, 24] = base
    return F


def _strip(name: str, prefix: str) -> str:
    n = name.lower()
    return n[len(prefix):] if prefix and n.startswith(prefix) and len(n) > len(prefix) else n


def _abbrev(a: str, b: str, ta: tuple[str, ...], tb: tuple[str, ...]) -> float:
    """1 when one raw name abbreviates the other (initials, prefixes, vowels dropped)."""
    ca, cb = a.replace("_", ""), b.replace("_", "")
    if not ca or not cb:
        return 0.0
    if N.is_abbreviation(ca, cb) or N.is_abbreviation(cb, ca):
        return 1.0
    ia, ib = "".join(t[0] for t in ta if t), "".join(t[0] for t in tb if t)
    if len(ib) >= 2 and ca == ib or len(ia) >= 2 and cb == ia:
        return 1.0
    return 0.0


def _ranks(score: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per pair: 1/(rank in its row), 1/(rank in its column), and the margin to the best other."""
    row_order = (-score).argsort(axis=1).argsort(axis=1)
    col_order = (-score).argsort(axis=0).argsort(axis=0)
    row_rank = 1.0 / (1.0 + row_order)
    col_rank = 1.0 / (1.0 + col_order)

    def margin(s: np.ndarray, axis: int) -> np.ndarray:
        if s.shape[axis] < 2:
            return s.copy()
        top2 = -np.sort(-s, axis=axis).take([0, 1], axis=axis)
        best, second = top2.take(0, axis=axis), top2.take(1, axis=axis)
        best = np.expand_dims(best, axis)
        second = np.expand_dims(second, axis)
        other = np.where(s >= best, second, best)
        return s - other

    return row_rank, col_rank, margin(score, 1), margin(score, 0)
