"""Vectorised pairwise similarities for the matcher: every (source, target) pair at numpy speed.

Each function returns an (n_source, n_target) matrix equal to applying a scalar definition of
``names`` / ``profile`` to every pair. The number of pairs is the square of the column count, and a
Python loop per pair costs tens of microseconds (milliseconds for long names), so the loop, not the
model, used to bound what one request could cost. Pairs are processed in blocks of rows so memory
stays flat and a caller's ``checkpoint`` runs between blocks (a deadline can stop the work).

Example::

    levenshtein_matrix(["cust_nm"], ["customer_name", "cust_no"])   # array([[6, 2]])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse

# Myers' bit-parallel edit distance keeps one 64-bit word per pair: names are compared on their first
# 64 characters (PostgreSQL and MySQL identifiers are at most 63/64 long, so real names are whole)
EDIT_CHARS = 64
# pairs per block: a few MB per temporary array whatever the request size
BLOCK_PAIRS = 1 << 16
PAD = -1

Checkpoint = Callable[[], None]


def no_checkpoint() -> None:
    """The default checkpoint: nothing to stop for."""


def codes(strings: Sequence[str], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Code points of ``strings`` as an (n, width) int32 matrix padded with -1, and the lengths (cut at width)."""
    lens = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    w = int(lens.max(initial=0)) if width is None else width
    out = np.full((len(strings), max(w, 1)), PAD, dtype=np.int32)
    for i, s in enumerate(strings):
        if s:
            # surrogatepass: JSON may carry a lone surrogate; it is one code point like any other
            cp = np.frombuffer(s[:w].encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            out[i, :len(cp)] = cp
    return out, np.minimum(lens, w)


def _row_blocks(n_rows: int, n_cols: int) -> list[range]:
    per = max(1, BLOCK_PAIRS // max(1, n_cols))
    return [range(i, min(n_rows, i + per)) for i in range(0, n_rows, per)]


# --------------------------------------------------------------------------- edit distance
def levenshtein_matrix(a: Sequence[str], b: Sequence[str], *, checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """Levenshtein distances of every pair, strings cut at ``EDIT_CHARS`` (Myers 1999 / Hyyrö 2003).

    The pattern (a string of ``a``) lives in the bits of one uint64 per pair; each character of the
    other string updates all pairs at once, so the cost is len(b) numpy steps, not len(a) * len(b)
    Python steps per pair.
    """
    A, la = codes(a, EDIT_CHARS)
    B, lb = codes(b, EDIT_CHARS)
    out = np.zeros((len(a), len(b)), dtype=np.int64)
    if not len(a) or not len(b):
        return out
    alphabet = np.unique(A[A != PAD])
    # peq[i, c]: bit k set when a[i][k] is character c; the last column is "a character a[i] lacks"
    peq = np.zeros((len(a), len(alphabet) + 1), dtype=np.uint64)
    rows, cols = np.nonzero(A != PAD)
    np.bitwise_or.at(peq, (rows, np.searchsorted(alphabet, A[rows, cols])),
                     np.left_shift(np.uint64(1), cols.astype(np.uint64)))
    bi = np.searchsorted(alphabet, B)
    known = (B != PAD) & (bi < len(alphabet))
    known[known] = alphabet[bi[known]] == B[known]
    bi[~known] = len(alphabet)
    one, ones = np.uint64(1), np.uint64(0xFFFFFFFFFFFFFFFF)
    for block in _row_blocks(len(a), len(b)):
        checkpoint()
        s = np.repeat(np.asarray(block), len(b))
        t = np.tile(np.arange(len(b)), len(block))
        m, n = la[s], lb[t]
        high = np.left_shift(one, (np.maximum(m, 1) - 1).astype(np.uint64))
        pv, mv = np.full(len(s), ones), np.zeros(len(s), dtype=np.uint64)
        score = m.copy()
        for j in range(int(n.max(initial=0))):
            eq = peq[s, bi[t, j]]
            xv = eq | mv
            xh = (((eq & pv) + pv) ^ pv) | eq
            ph = mv | ~(xh | pv)
            mh = pv & xh
            live = j < n
            score += (live & ((ph & high) != 0)).astype(np.int64) - (live & ((mh & high) != 0)).astype(np.int64)
            ph = (ph << one) | one  # the first row of the table counts insertions: D[0][j] = j
            mh = mh << one
            pv = mh | ~(xv | ph)
            mv = ph & xv
        out[np.asarray(block)] = np.where(m == 0, n, score).reshape(len(block), len(b))
    return out


def levenshtein_sim_matrix(a: Sequence[str], b: Sequence[str], *, checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """``names.levenshtein_sim`` of every pair (lowercased, cut at ``EDIT_CHARS``)."""
    a = [s.lower()[:EDIT_CHARS] for s in a]
    b = [s.lower()[:EDIT_CHARS] for s in b]
    d = levenshtein_matrix(a, b, checkpoint=checkpoint)
    la = np.array([len(s) for s in a], dtype=np.int64)[:, None]
    lb = np.array([len(s) for s in b], dtype=np.int64)[None, :]
    longest = np.maximum(la, lb)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = 1.0 - d / longest
    return np.where(longest == 0, 1.0, sim)


# --------------------------------------------------------------------------- abbreviations
def _abbreviates(short: np.ndarray, short_len: np.ndarray, long: np.ndarray, long_len: np.ndarray,
                 si: np.ndarray, li: np.ndarray) -> np.ndarray:
    """``names.is_abbreviation(short[si], long[li])`` for index arrays ``si``/``li`` of equal length."""
    ls, ll = short_len[si], long_len[li]
    ok = (ls >= 2) & (ls < ll) & (short[si, 0] == long[li, 0])
    result = np.zeros(len(si), dtype=bool)
    idx = np.nonzero(ok)[0]
    if not len(idx):
        return result
    si, li, ls, ll = si[idx], li[idx], ls[idx], ll[idx]
    prefix = np.ones(len(idx), dtype=bool)
    for k in range(int(ls.max())):
        prefix &= (k >= ls) | (short[si, k] == long[li, k])
    # subsequence keeping order: a pointer into the short string advances on each matching character
    ptr = np.zeros(len(idx), dtype=np.int64)
    last = short.shape[1] - 1
    for k in range(int(ll.max())):
        want = short[si, np.minimum(ptr, last)]
        ptr += (ptr < ls) & (long[li, k] == want)
    result[idx] = ((ls >= 3) & (ptr == ls)) | (prefix & (ll <= 4))
    return result


def abbreviation_matrix(a: Sequence[str], b: Sequence[str], initials_a: Sequence[str], initials_b: Sequence[str],
                        *, checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """``features._abbrev`` of every pair: one name abbreviates the other, or spells its initials.

    ``a``/``b`` are the names without separators, ``initials_*`` the first letters of their tokens.
    """
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    if not len(a) or not len(b):
        return out
    by_initials: dict[str, list[int]] = {}
    for j, ini in enumerate(initials_b):
        if len(ini) >= 2:
            by_initials.setdefault(ini, []).append(j)
    for i, name in enumerate(a):
        out[i, by_initials.get(name, [])] = 1.0
    by_initials = {}
    for i, ini in enumerate(initials_a):
        if len(ini) >= 2:
            by_initials.setdefault(ini, []).append(i)
    for j, name in enumerate(b):
        out[by_initials.get(name, []), j] = 1.0
    A, la = codes(a)
    B, lb = codes(b)
    for block in _row_blocks(len(a), len(b)):
        checkpoint()
        s = np.repeat(np.asarray(block), len(b))
        t = np.tile(np.arange(len(b)), len(block))
        hit = _abbreviates(A, la, B, lb, s, t) | _abbreviates(B, lb, A, la, t, s)
        out[s[hit], t[hit]] = 1.0
    empty_a = np.array([not x for x in a])
    empty_b = np.array([not x for x in b])
    out[empty_a, :] = 0.0
    out[:, empty_b] = 0.0
    return out


# --------------------------------------------------------------------------- token sets
def stem(token: str) -> str:
    """``names._stem``: a plural or verb suffix dropped when three letters remain."""
    for suf in ("ies", "es", "s", "ed", "ing"):
        if token.endswith(suf) and len(token) - len(suf) >= 3:
            return token[: -len(suf)]
    return token


def token_relation(xs: Sequence[str], ys: Sequence[str], *, checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """(len(xs), len(ys)) bool: equal after stemming, or one abbreviates the other (``soft_token_jaccard``)."""
    stems: dict[str, int] = {}
    sx = np.array([stems.setdefault(stem(x), len(stems)) for x in xs], dtype=np.int64)
    sy = np.array([stems.setdefault(stem(y), len(stems)) for y in ys], dtype=np.int64)
    rel = sx[:, None] == sy[None, :]
    X, lx = codes(xs)
    Y, ly = codes(ys)
    # an abbreviation shares its first letter: only same-letter pairs are tested, letter by letter
    first_y: dict[int, np.ndarray] = {}
    for c in np.unique(Y[:, 0]):
        first_y[int(c)] = np.nonzero(Y[:, 0] == c)[0]
    for c in np.unique(X[:, 0]):
        ys_c = first_y.get(int(c))
        if ys_c is None or c == PAD:
            continue
        xs_c = np.nonzero(X[:, 0] == c)[0]
        per = max(1, BLOCK_PAIRS // len(ys_c))
        for k in range(0, len(xs_c), per):
            checkpoint()
            part = xs_c[k:k + per]
            xi = np.repeat(part, len(ys_c))
            yi = np.tile(ys_c, len(part))
            hit = _abbreviates(X, lx, Y, ly, xi, yi) | _abbreviates(Y, ly, X, lx, yi, xi)
            rel[xi[hit], yi[hit]] = True
    return rel


def _vocabulary(lists: Sequence[Sequence[str] | set[str]]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for items in lists:
        for x in items:
            vocab.setdefault(x, len(vocab))
    return vocab


def _incidence(sets: Sequence[Sequence[str] | set[str]], vocab: dict[str, int]) -> sparse.csr_matrix:
    rows, cols = [], []
    for i, items in enumerate(sets):
        for x in set(items):
            rows.append(i)
            cols.append(vocab[x])
    data = np.ones(len(rows), dtype=np.int64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(sets), max(1, len(vocab))))


def set_overlap(a: Sequence[set[str] | Sequence[str]], b: Sequence[set[str] | Sequence[str]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|a_i & b_j| matrix, |a_i| column vector, |b_j| row vector) of the distinct items of each set."""
    vocab = _vocabulary([*a, *b])
    inter = (_incidence(a, vocab) @ _incidence(b, vocab).T).toarray().astype(np.int64)
    na = np.array([len(set(x)) for x in a], dtype=np.int64)[:, None]
    nb = np.array([len(set(x)) for x in b], dtype=np.int64)[None, :]
    return inter, na, nb


def jaccard_matrix(a: Sequence[set[str] | Sequence[str]], b: Sequence[set[str] | Sequence[str]]) -> np.ndarray:
    """``names.jaccard`` of every pair (0 when both sets are empty)."""
    inter, na, nb = set_overlap(a, b)
    union = na + nb - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def soft_jaccard_matrix(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], *,
                        checkpoint: Checkpoint = no_checkpoint) -> np.ndarray:
    """``names.soft_token_jaccard`` of every pair, with the same greedy left-to-right matching."""
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    if not len(a) or not len(b):
        return out
    xs = list(_vocabulary(a))
    ys = list(_vocabulary(b))
    rel = np.zeros((len(xs) + 1, len(ys) + 1), dtype=bool)  # last row/column: padding, related to nothing
    if xs and ys:
        rel[:-1, :-1] = token_relation(xs, ys, checkpoint=checkpoint)
    xid, yid = {x: i for i, x in enumerate(xs)}, {y: j for j, y in enumerate(ys)}
    ka, kb = max(1, max(len(t) for t in a)), max(1, max(len(t) for t in b))
    TA = np.full((len(a), ka), len(xs), dtype=np.int64)
    TB = np.full((len(b), kb), len(ys), dtype=np.int64)
    for i, toks in enumerate(a):
        TA[i, :len(toks)] = [xid[x] for x in toks]
    for j, toks in enumerate(b):
        TB[j, :len(toks)] = [yid[y] for y in toks]
    na = np.array([len(t) for t in a], dtype=np.int64)
    nb = np.array([len(t) for t in b], dtype=np.int64)
    for block in _row_blocks(len(a), len(b)):
        checkpoint()
        s = np.repeat(np.asarray(block), len(b))
        t = np.tile(np.arange(len(b)), len(block))
        tb = TB[t]
        used = np.zeros(tb.shape, dtype=bool)
        matched = np.zeros(len(s), dtype=np.int64)
        rows = np.arange(len(s))
        for i in range(int(na[np.asarray(block)].max(initial=0))):
            cand = rel[TA[s, i][:, None], tb] & ~used
            has = cand.any(axis=1)
            first = cand.argmax(axis=1)
            used[rows[has], first[has]] = True
            matched += has
        denom = na[s] + nb[t] - matched
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where((na[s] > 0) & (nb[t] > 0), matched / denom, 0.0)
        out[np.asarray(block)] = sim.reshape(len(block), len(b))
    return out
