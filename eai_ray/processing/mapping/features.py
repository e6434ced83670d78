"""Pairwise features between source and target columns for the learned scorer.

Everything here is a pure function of the two column lists (and an embedding function), so the
same features serve training on fabricated pairs and matching at run time.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eai_ray.processing.mapping import names as N
from eai_ray.processing.mapping import pairwise as PW
from eai_ray.processing.mapping.pairwise import Checkpoint, no_checkpoint
from eai_ray.processing.mapping.profile import Profile, profile_column, type_compatibility

FEATURE_VERSION = 3
FEATURES = (
    "name_cos", "desc_cos", "value_cos", "cross_cos", "token_jaccard", "soft_jaccard", "lev_tokens",
    "lev_raw", "abbrev", "type_compat", "same_family", "shape_sim", "pattern_sim", "value_jaccard",
    "value_contain", "both_numeric", "range_overlap", "magnitude", "len_ratio", "distinct_diff",
    "row_rank", "col_rank", "row_margin", "col_margin", "base",
)

EncodeFn = Callable[[list[str]], np.ndarray]
# lexical features read a name's first 16 words: real names have at most a handful (the training and
# benchmark corpora at most 6), and a cap keeps the token-pair work of one pair bounded
LEX_TOKENS = 16


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


@dataclass
class Draft:
    """One side before embedding: what ``prepare`` will embed is known (and can be budgeted) first."""
    columns: list[dict[str, Any]]
    profiles: list[Profile]
    prefix: str
    phrases: list[str]
    tokens: list[tuple[str, ...]]
    descriptions: list[str]

    def texts(self) -> list[str]:
        """The sentences ``embed`` encodes: name phrases, sample-value texts, then the descriptions given."""
        values = [f"{p.sample_text}" or "none" for p in self.profiles]
        return self.phrases + values + [d for d in self.descriptions if d]


def describe(columns: Sequence[dict[str, Any]]) -> Draft:
    """Tokens, phrases and profiles of the columns: everything but the embeddings."""
    cols = [dict(c) for c in columns]
    prefix = N.common_prefix([c["name"] for c in cols])
    toks = [N.tokens(c["name"], prefix) for c in cols]
    phrases = [" ".join(t) or c["name"].lower() for t, c in zip(toks, cols)]
    profiles = [profile_column(c) for c in cols]
    descs = [c.get("description") or "" for c in cols]
    return Draft(cols, profiles, prefix, phrases, toks, descs)


def embed(draft: Draft, encode: EncodeFn) -> Side:
    """The side with its name, description and value embeddings."""
    texts = draft.texts()
    vecs = encode(texts) if texts else np.zeros((0, 384), np.float32)
    n = len(draft.columns)
    name_vecs, value_vecs = vecs[:n], vecs[n:2 * n]
    desc_vecs = None
    if any(draft.descriptions):
        desc_vecs = name_vecs.copy()  # a column without a description is described by its name
        it = iter(vecs[2 * n:])
        for i, d in enumerate(draft.descriptions):
            if d:
                desc_vecs[i] = next(it)
    return Side(draft.columns, draft.profiles, draft.prefix, draft.phrases, draft.tokens, name_vecs, desc_vecs,
                value_vecs)


def prepare(columns: Sequence[dict[str, Any]], encode: EncodeFn) -> Side:
    return embed(describe(columns), encode)


def pair_features(src: Side, tgt: Side, *, checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """Feature tensor of shape (len(src), len(tgt), len(FEATURES)).

    Every feature is a whole-matrix operation (``pairwise``), so the cost per pair is a few numpy
    element operations; ``checkpoint`` runs between blocks of work (a deadline can stop it).
    """
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
    lex = lexical_features(src, tgt, checkpoint=checkpoint)
    checkpoint()
    val = value_features(src.profiles, tgt.profiles)
    base = (0.35 * desc_cos + 0.2 * value_cos + 0.25 * lex[:, :, 1] + 0.2 * val[:, :, 0]).astype(np.float32)
    row_rank, col_rank, row_margin, col_margin = _ranks(base)
    F[:, :, 0], F[:, :, 1], F[:, :, 2], F[:, :, 3] = name_cos, desc_cos, value_cos, cross_cos
    F[:, :, 4:9] = lex
    F[:, :, 9:20] = val
    F[:, :, 20], F[:, :, 21], F[:, :, 22], F[:, :, 23] = row_rank, col_rank, row_margin, col_margin
    F[:, :, 24] = base
    return F


def lexical_features(src: Side, tgt: Side, *, checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """(ns, nt, 5): token Jaccard, soft token Jaccard, edit similarity of the joined tokens and of the
    raw names, abbreviation - on each name's first ``LEX_TOKENS`` words and ``pairwise.EDIT_CHARS`` letters."""
    ts = [t[:LEX_TOKENS] for t in src.tokens]
    tt = [t[:LEX_TOKENS] for t in tgt.tokens]
    raw_s = [_strip(c["name"], src.prefix) for c in src.columns]
    raw_t = [_strip(c["name"], tgt.prefix) for c in tgt.columns]
    lex = np.zeros((len(ts), len(tt), 5), dtype=np.float32)
    lex[:, :, 0] = PW.jaccard_matrix(ts, tt)
    lex[:, :, 1] = PW.soft_jaccard_matrix(ts, tt, checkpoint=checkpoint)
    lex[:, :, 2] = PW.levenshtein_sim_matrix(["".join(t) for t in ts], ["".join(t) for t in tt], checkpoint=checkpoint)
    lex[:, :, 3] = PW.levenshtein_sim_matrix(raw_s, raw_t, checkpoint=checkpoint)
    lex[:, :, 4] = PW.abbreviation_matrix([r.replace("_", "") for r in raw_s], [r.replace("_", "") for r in raw_t],
                                          ["".join(x[0] for x in t if x) for t in ts],
                                          ["".join(x[0] for x in t if x) for t in tt], checkpoint=checkpoint)
    return lex


def value_features(ps: Sequence[Profile], pt: Sequence[Profile]) -> np.ndarray:
    """(ns, nt, 11): the ``profile`` pair functions (types, shapes, patterns, shared values, numeric
    ranges, lengths, distinctness) for every pair, from per-column vectors."""
    val = np.zeros((len(ps), len(pt), 11), dtype=np.float32)
    fams = sorted({p.family for p in ps} | {p.family for p in pt})
    fi = {f: i for i, f in enumerate(fams)}
    compat = np.array([[type_compatibility(a, b) for b in fams] for a in fams], dtype=np.float64)
    fs = np.array([fi[p.family] for p in ps])
    ft = np.array([fi[p.family] for p in pt])
    val[:, :, 0] = compat[fs[:, None], ft[None, :]]
    val[:, :, 1] = fs[:, None] == ft[None, :]
    val[:, :, 2] = _shape_similarity(ps, pt)
    val[:, :, 3] = _jaccard_nonempty([set(p.patterns) for p in ps], [set(p.patterns) for p in pt])
    inter, na, nb = PW.set_overlap([p.values for p in ps], [p.values for p in pt])
    both = (na > 0) & (nb > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        val[:, :, 4] = np.where(both, inter / (na + nb - inter), 0.0)
        val[:, :, 5] = np.where(both, inter / np.minimum(na, nb), 0.0)
    val[:, :, 6:9] = _numeric_features(ps, pt)
    ls = np.array([p.mean_len for p in ps], dtype=np.float64)[:, None]
    lt = np.array([p.mean_len for p in pt], dtype=np.float64)[None, :]
    hi = np.maximum(ls, lt)
    with np.errstate(divide="ignore", invalid="ignore"):
        val[:, :, 9] = np.where(hi > 0, np.minimum(ls, lt) / hi, 0.0)
    ds = np.array([p.distinct_ratio for p in ps], dtype=np.float64)
    dt_ = np.array([p.distinct_ratio for p in pt], dtype=np.float64)
    val[:, :, 10] = np.abs(ds[:, None] - dt_[None, :])
    return val


def _jaccard_nonempty(a: list[set[str]], b: list[set[str]]) -> np.ndarray:
    """``profile.pattern_similarity``: Jaccard, 0 when either side has no pattern."""
    inter, na, nb = PW.set_overlap(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((na > 0) & (nb > 0), inter / (na + nb - inter), 0.0)


def _shape_similarity(ps: Sequence[Profile], pt: Sequence[Profile]) -> np.ndarray:
    """``profile.shape_similarity``: cosine of the shape-fraction vectors (0 without shapes)."""
    keys = sorted({k for p in (*ps, *pt) for k in p.shapes})
    if not keys:
        return np.zeros((len(ps), len(pt)))
    ki = {k: i for i, k in enumerate(keys)}

    def matrix(profiles: Sequence[Profile]) -> tuple[np.ndarray, np.ndarray]:
        m = np.zeros((len(profiles), len(keys)))
        for r, p in enumerate(profiles):
            for k, v in p.shapes.items():
                m[r, ki[k]] = v
        # the norm summed in the profile's own order, as the scalar definition does
        norms = np.array([math.sqrt(sum(v * v for v in p.shapes.values())) for p in profiles])
        return m, norms

    ms, ns_ = matrix(ps)
    mt, nt_ = matrix(pt)
    norm = ns_[:, None] * nt_[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, (ms @ mt.T) / norm, 0.0)


def _numeric_features(ps: Sequence[Profile], pt: Sequence[Profile]) -> np.ndarray:
    """``profile.numeric_features`` for every pair: (both numeric, range overlap, closeness of magnitudes)."""
    def vectors(profiles: Sequence[Profile]) -> tuple[np.ndarray, ...]:
        has = np.array([len(p.numbers) >= 1 for p in profiles])
        lo = np.array([min(p.numbers) if p.numbers else 0.0 for p in profiles], dtype=np.float64)
        hi = np.array([max(p.numbers) if p.numbers else 0.0 for p in profiles], dtype=np.float64)
        mag = np.array([math.log10(sum(abs(x) for x in p.numbers) / len(p.numbers) + 1e-9) if p.numbers else 0.0
                        for p in profiles], dtype=np.float64)
        return has, lo, hi, mag

    hs, lo1, hi1, m1 = (v[:, None] for v in vectors(ps))
    ht, lo2, hi2, m2 = (v[None, :] for v in vectors(pt))
    both = hs & ht
    out = np.zeros((len(ps), len(pt), 3))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inter = np.maximum(0.0, np.minimum(hi1, hi2) - np.maximum(lo1, lo2))
        union = np.maximum(hi1, hi2) - np.minimum(lo1, lo2)
        overlap = np.where(union > 0, inter / union, np.where(lo1 == lo2, 1.0, 0.0))
        out[:, :, 0] = both
        out[:, :, 1] = np.where(both, overlap, 0.0)
        out[:, :, 2] = np.where(both, 1.0 / (1.0 + np.abs(m1 - m2)), 0.0)
    return out


def _strip(name: str, prefix: str) -> str:
    n = name.lower()
    return n[len(prefix):] if prefix and n.startswith(prefix) and len(n) > len(prefix) else n


def _abbrev(a: str, b: str, ta: tuple[str, ...], tb: tuple[str, ...]) -> float:
    """1 when one raw name abbreviates the other (initials, prefixes, vowels dropped).

    The scalar definition that ``pairwise.abbreviation_matrix`` computes for all pairs at once (tests
    compare the two)."""
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
