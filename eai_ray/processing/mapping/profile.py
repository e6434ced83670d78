"""Profiles of a column's sample values: type family, value shapes, patterns, numeric range.

Example::

    p = profile_column({"name": "email", "samples": ["a@x.com", "b@y.org"]})
    p.family, p.shapes["email"]      # ('string', 1.0)
"""
from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SHAPES = ("empty", "bool", "int", "float", "date", "datetime", "time", "email", "url", "phone", "uuid",
          "code", "word", "text", "money")

_RE = {
    "email": re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"),
    "url": re.compile(r"^(https?://|www\.)\S+$", re.I),
    "uuid": re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I),
    "int": re.compile(r"^[+-]?\d+$"),
    "float": re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d+)?[eE][+-]?\d+)$"),
    "money": re.compile(r"^[$€£¥]\s?[+-]?[\d,]+(\.\d+)?$|^[+-]?[\d,]+(\.\d+)?\s?(USD|EUR|GBP)$"),
    "date": re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,2} [A-Za-z]{3,9} \d{4})$"),
    "datetime": re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"),
    "time": re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$"),
    "phone": re.compile(r"^\+?[\d][\d\s().-]{6,}\d$"),
    "code": re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9#_./-]+$|^[A-Z]{2,}$"),
    "bool": re.compile(r"^(true|false|yes|no|y|n|t|f)$", re.I),
}

NUMERIC = {"int", "float", "decimal"}
FAMILIES = ("int", "float", "decimal", "bool", "string", "date", "timestamp", "time", "other")


def shape_of(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    s = str(value).strip()
    if not s:
        return "empty"
    for name in ("bool", "int", "float", "money", "datetime", "date", "time", "email", "url", "uuid"):
        if _RE[name].match(s):
            return name
    if _RE["phone"].match(s) and sum(c.isdigit() for c in s) >= 7:
        return "phone"
    if _RE["code"].match(s):
        return "code"
    return "text" if " " in s else "word"


def pattern_of(value: Any) -> str:
    """Character-class shape with runs collapsed: 'AB-123' -> 'A-9', 'Smith' -> 'Aa'."""
    s = str(value).strip()[:40]
    out: list[str] = []
    for c in s:
        k = "9" if c.isdigit() else "A" if c.isupper() else "a" if c.isalpha() else c
        if not out or out[-1] != k:
            out.append(k)
    return "".join(out)


def type_family(type_name: str | None) -> str:
    t = (type_name or "").lower()
    if not t:
        return "other"
    if any(k in t for k in ("timestamp", "datetime")):
        return "timestamp"
    if "date" in t:
        return "date"
    if t.startswith("time"):
        return "time"
    if "bool" in t or t == "bit":
        return "bool"
    if "decimal" in t or "numeric" in t or "money" in t:
        return "decimal"
    if any(k in t for k in ("float", "double", "real")):
        return "float"
    if "int" in t or t in ("serial", "bigserial"):
        return "int"
    if any(k in t for k in ("char", "text", "string", "str", "uuid", "json", "varchar", "clob")):
        return "string"
    return "other"


def _to_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    s = str(v).strip().replace(",", "")
    s = re.sub(r"^[$€£¥]\s?|\s?(USD|EUR|GBP)$", "", s)
    try:
        f = float(s)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


@dataclass
class Profile:
    name: str
    family: str
    declared: bool
    shapes: dict[str, float] = field(default_factory=dict)
    patterns: Counter = field(default_factory=Counter)
    values: set[str] = field(default_factory=set)
    numbers: list[float] = field(default_factory=list)
    mean_len: float = 0.0
    distinct_ratio: float = 0.0
    sample_text: str = ""

    @property
    def numeric(self) -> bool:
        return len(self.numbers) >= max(1, 0.8 * max(1, sum(1 for _ in self.values)))


def profile_column(col: dict[str, Any], *, max_samples: int = 50) -> Profile:
    """Profile one column given as {name, samples, type?, description?}."""
    samples = [v for v in (col.get("samples") or [])[:max_samples]]
    present = [v for v in samples if v is not None and str(v).strip() != ""]
    shapes = Counter(shape_of(v) for v in present)
    total = max(1, len(present))
    shape_frac = {k: v / total for k, v in shapes.items()}
    declared = type_family(col.get("type"))
    family = declared if declared != "other" else _infer_family(shape_frac)
    strs = [str(v).strip() for v in present]
    numbers = [f for f in (_to_float(v) for v in present) if f is not None] if family in NUMERIC or \
        shape_frac.get("int", 0) + shape_frac.get("float", 0) + shape_frac.get("money", 0) > 0.8 else []
    uniq = list(dict.fromkeys(strs))
    return Profile(
        name=col.get("name", ""), family=family, declared=declared != "other", shapes=shape_frac,
        patterns=Counter(pattern_of(s) for s in strs), values={s.lower() for s in strs}, numbers=numbers,
        mean_len=sum(len(s) for s in strs) / total if strs else 0.0,
        distinct_ratio=len(uniq) / total if strs else 0.0,
        sample_text=", ".join(s[:40] for s in uniq[:8]),
    )


def _infer_family(shapes: dict[str, float]) -> str:
    if not shapes:
        return "other"
    top = max(shapes, key=shapes.__getitem__)
    return {"int": "int", "float": "float", "money": "decimal", "bool": "bool", "date": "date",
            "datetime": "timestamp", "time": "time"}.get(top, "string")


_COMPAT = {
    frozenset({"int", "float"}): 0.7, frozenset({"int", "decimal"}): 0.8, frozenset({"float", "decimal"}): 0.9,
    frozenset({"date", "timestamp"}): 0.8, frozenset({"int", "bool"}): 0.3, frozenset({"string", "date"}): 0.3,
    frozenset({"string", "timestamp"}): 0.3, frozenset({"string", "time"}): 0.3, frozenset({"int", "string"}): 0.2,
    frozenset({"decimal", "string"}): 0.15, frozenset({"float", "string"}): 0.15, frozenset({"bool", "string"}): 0.3,
    frozenset({"time", "timestamp"}): 0.5,
}


def type_compatibility(a: str, b: str) -> float:
    if a == b:
        return 1.0 if a != "other" else 0.5
    if "other" in (a, b):
        return 0.5
    return _COMPAT.get(frozenset({a, b}), 0.0)


def shape_similarity(a: Profile, b: Profile) -> float:
    keys = set(a.shapes) | set(b.shapes)
    if not keys:
        return 0.0
    dot = sum(a.shapes.get(k, 0) * b.shapes.get(k, 0) for k in keys)
    na = math.sqrt(sum(v * v for v in a.shapes.values()))
    nb = math.sqrt(sum(v * v for v in b.shapes.values()))
    return dot / (na * nb) if na and nb else 0.0


def pattern_similarity(a: Profile, b: Profile) -> float:
    if not a.patterns or not b.patterns:
        return 0.0
    sa, sb = set(a.patterns), set(b.patterns)
    return len(sa & sb) / len(sa | sb)


def value_overlap(a: Profile, b: Profile) -> tuple[float, float]:
    """(Jaccard, containment of the smaller set) of normalised sample values."""
    if not a.values or not b.values:
        return 0.0, 0.0
    inter = len(a.values & b.values)
    return inter / len(a.values | b.values), inter / min(len(a.values), len(b.values))


def numeric_features(a: Profile, b: Profile) -> tuple[float, float, float]:
    """(both numeric, range overlap, closeness of magnitudes) - the last two 0 when not both numeric."""
    if len(a.numbers) < 1 or len(b.numbers) < 1:
        return 0.0, 0.0, 0.0
    lo1, hi1, lo2, hi2 = min(a.numbers), max(a.numbers), min(b.numbers), max(b.numbers)
    inter = max(0.0, min(hi1, hi2) - max(lo1, lo2))
    union = max(hi1, hi2) - min(lo1, lo2)
    overlap = inter / union if union > 0 else (1.0 if lo1 == lo2 else 0.0)
    m1 = sum(abs(x) for x in a.numbers) / len(a.numbers)
    m2 = sum(abs(x) for x in b.numbers) / len(b.numbers)
    mag = 1.0 / (1.0 + abs(math.log10(m1 + 1e-9) - math.log10(m2 + 1e-9)))
    return 1.0, overlap, mag
