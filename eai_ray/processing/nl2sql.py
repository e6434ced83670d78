"""NL-to-SQL: a question -> SQL grounded in the semantic layer (or an LLM) -> sqlglot validation ->
repair -> read-only execution -> an answer with its confidence and the tables and columns used.

Grounded composition first: the question is linked to metrics, dimensions, filter values, time
ranges, ordering and limits by embeddings and generic patterns (no question-specific rules), then
compiled by `SemanticModel.compile`. When that fails and an LLM is configured, the LLM writes SQL
from the schema with few-shot examples, and validation/execution errors go back to it (repair loop).

Example::

    answer("revenue by customer region in 1995", catalog=tables, semantic=SemanticModel.load("configs/semantic/tpch.yaml"))
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from eai_ray.errors import SqlValidationError, UserError
from eai_ray.processing.sql import column_lineage, evaluate_over, run_select, validate_select
from eai_ray.storage.semantic import Agg, DimRef, Filter, FilterOp, SemanticModel

# ---------------------------------------------------------------------- safety
_WRITE = re.compile(r"\b(delete|drop|truncate|update|insert|alter|create|grant|revoke|merge|upsert|replace|"
                    r"attach|detach|copy|vacuum|pragma|install|load|export|import|overwrite|erase|wipe|remove|"
                    r"modify|rename|set)\b", re.I)
_SYSTEM = re.compile(r"\b(information_schema|pg_catalog|pg_\w+|sqlite_master|sqlite_\w+|duckdb_\w+|"
                     r"system\s+(tables?|catalogs?)|read_csv\w*|read_parquet|read_json\w*|glob\s*\(|getenv|"
                     r"(system|internal)\s+catalog|catalog\s+tables|metadata\s+tables)\b", re.I)
_MULTI = re.compile(r";\s*\S")


def _plain_letters(text: str) -> str:
    """Text with look-alike letters folded (fullwidth, ligatures, Cyrillic/Greek homoglyphs, zero-width
    characters dropped), so a refusal word cannot be smuggled past the check in another script."""
    import unicodedata

    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[\u200b-\u200f\u2060\ufeff\u00ad]", "", text)
    return text.translate(_HOMOGLYPHS)


# Cyrillic and Greek letters drawn like Latin ones (Unicode confusables, lower and upper case)
_HOMOGLYPHS = str.maketrans("аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅοαρτνκιΑΒΕΗΙΚΜΝΟΡΤΥΧ",
                            "aeopcyxijsdqwABEKMHOPCTXIJSoaptvkiABEHIKMNOPTYX")


def refusal(question: str) -> str | None:
    """Why a question is refused (it asks to change data, read system catalogs, or run several statements)."""
    q = _plain_letters(question).strip()
    m = _WRITE.search(q)
    if m:
        word = m.group(1).lower()
        if word == "set" and not re.search(r"\bset\s+\w+\s*=|\bset\b.*\b(to|=)\b", q, re.I):
            pass
        elif word in ("remove", "modify", "rename", "replace", "load", "import", "export") and \
                not re.search(r"\b(table|row|rows|record|records|column|data|database|schema|from)\b", q, re.I):
            pass
        else:
            return f"the question asks to change data or the database ('{m.group(1)}'): only read-only questions are answered"
    if _SYSTEM.search(q):
        return "system catalogs, files and settings cannot be queried: only lakehouse tables"
    if _MULTI.search(q):
        return "several statements are not allowed: ask one question"
    return None


# ---------------------------------------------------------------------- catalog access
def catalog_schema(catalog, namespaces=("silver", "gold")) -> dict[str, dict[str, str]]:
    """{ns.table: {column: type}} of a pyiceberg catalog or a {name: pa.Table} mapping."""
    if isinstance(catalog, Mapping):
        return {k: {f.name: str(f.type) for f in v.schema} for k, v in catalog.items()}
    out = {}
    for ns in namespaces:
        try:
            idents = catalog.list_tables(ns)
        except Exception:  # namespace missing
            continue
        for ident in idents:
            tbl = catalog.load_table(ident)
            out[".".join(ident)] = {f.name: str(f.field_type) for f in tbl.schema().fields}
    return out


def _read_tables(catalog, names: list[str]) -> dict[str, pa.Table]:
    if isinstance(catalog, Mapping):
        return {n: catalog[n] for n in names}
    return {n: catalog.load_table(n).scan().to_arrow() for n in names}


def run_query(sql: str, catalog, *, limit: int = 1000) -> tuple[str, list[dict[str, Any]]]:
    """Validate `sql` over the catalog's tables (one read-only SELECT, at most `limit` rows) and run it:
    (the validated SQL, its rows). `catalog`: a pyiceberg catalog or {"ns.table": pa.Table}."""
    vq = validate_select(sql, catalog_schema(catalog), limit=limit)
    return vq.sql, run_select(vq, _read_tables(catalog, vq.tables)).to_pylist()


# ---------------------------------------------------------------------- linking
_STOP = {"the", "a", "an", "of", "in", "for", "by", "per", "what", "is", "are", "was", "were", "which", "who",
         "show", "me", "list", "give", "tell", "how", "many", "much", "and", "with", "to", "from", "on", "each",
         "every", "their", "its", "all", "that", "have", "has", "had", "did", "do", "does", "total", "during",
         "between", "than", "more", "less", "top", "most", "highest", "lowest", "there", "be", "it", "as", "at",
         "or", "into", "over", "under", "above", "below", "find", "get", "compute", "calculate", "please"}
_GENERIC = _STOP | {
    "number", "count", "amount", "sum", "average", "avg", "mean", "share", "percentage", "percent", "fraction",
    "proportion", "ratio", "most", "least", "largest", "smallest", "biggest", "best", "worst", "maximum", "minimum",
    "max", "min", "earliest", "latest", "greatest", "fewest", "rank", "ranked", "ranking", "sorted", "sort", "our",
    "we", "us", "you", "i", "can", "could", "would", "should", "will", "display", "name", "names", "overall",
    "ever", "across", "among", "altogether", "together", "data", "figures", "figure", "report", "breakdown",
    "break", "down", "split", "grouped", "broken", "this", "these", "those", "they", "them", "any", "some", "one",
    "both", "also", "only", "just", "been", "being", "whose", "where", "when", "while", "via", "through", "within",
    "up", "out", "so", "far", "currently", "current", "time", "times", "period", "date", "dates", "year", "years",
    "month", "months", "quarter", "quarters", "week", "weeks", "day", "days", "yearly", "monthly", "quarterly",
    "weekly", "daily", "annual", "annually", "q1", "q2", "q3", "q4", "first", "second", "third", "fourth", "last",
    "previous", "past", "next", "since", "before", "after", "until", "distinct", "different", "unique",
    "combined", "each", "then", "respectively", "including", "included", "value", "values", "level",
    "levels", "big", "small", "high", "low", "like", "look", "looking", "want", "need", "see", "let", "know",
    "based", "located", "registered", "placed", "shipped", "made", "make", "generated", "brought", "bring", "come",
    "came", "comes", "bought", "sold", "earned", "spent", "got", "get", "gets", "received", "take", "took", "taken"}
_GRAINS = {"year": "year", "years": "year", "yearly": "year", "annual": "year", "annually": "year",
           "month": "month", "months": "month", "monthly": "month", "quarter": "quarter", "quarters": "quarter",
           "quarterly": "quarter", "week": "week", "weeks": "week", "weekly": "week", "day": "day", "days": "day",
           "daily": "day"}
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_ORD = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_PASSIVE = {"made", "sold", "bought", "taken", "done", "given", "paid", "sent", "held", "owned", "run", "won", "written",
            "brought", "spent", "built", "kept", "put", "seen"}
_AGG_WORDS: list[tuple[str, Agg]] = [(r"(?:number|count) of (?:distinct|different|unique)|how many (?:distinct|different|unique)|"
               r"(?:distinct|unique) (?:number|count) of", "count_distinct"),
              (r"earliest|oldest|minimum|min|smallest|lowest", "min"),
              (r"latest|newest|most recent|maximum|max|largest|biggest|highest", "max"),
              (r"average|avg|mean", "avg"), (r"total|combined|sum of(?: the| all)?", "sum")]
_ADHOC_TYPES = {"count_distinct": ("categorical",), "min": ("time", "numeric"), "max": ("time", "numeric"),
                "avg": ("numeric",), "sum": ("numeric",)}
_AGG_ALT = "|".join(p for p, _ in _AGG_WORDS)
_ADHOC = re.compile(r"\b((?:(?:" + _AGG_ALT + r")\s*,\s*)*(?:" + _AGG_ALT + r"))(?:,?\s+and\s+(?:the\s+)?(" + _AGG_ALT +
                    r"))?\s+(?:the\s+|all\s+)?"
                    r"((?:[a-z_]+\s?){1,3}?)"
                    r"(?=\s*(?:\b(?:in|of|for|per|each|every|by|with|from|across|on|during|among|are|is|was|were|do|does|did|"
                    r"have|has|that|which|who|and|placed|shipped|sold|ordered)\b|,|\?|\.|$))")
_LOCATED = {"based", "located", "registered", "headquartered", "situated", "living", "residing", "domiciled"}
_AMOUNT_WORDS = {"number", "count", "amount", "sum", "total", "average", "avg", "mean", "share", "percentage",
                 "percent", "fraction", "proportion"}
_GROUP_CUE = re.compile(r"\b(?:grouped by|broken down by|split by|for each|for every|in each|by|per|each|across)\s+"
                        r"((?:[a-z_]+\s?){1,4}?)(?=\s*(?:\b(?:in|for|with|where|during|between|from|since|before|"
                        r"after|and|who|that|whose|when|ordered|sorted|having|of|on|top)\b|\d|,|\?|\.|$))", re.I)


@dataclass
class Plan:
    metrics: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    time_range: tuple[dt.date | None, dt.date | None] | None = None
    time_dimension: str | None = None
    order_by: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None
    scores: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aggregates: list[tuple[str, str, Agg]] = field(default_factory=list)  # ad-hoc (metric, 'entity.dim', agg)
    unexplained: list[str] = field(default_factory=list)  # content words no part of the plan accounts for
    model: SemanticModel | None = None  # the model with those ad-hoc metrics, when there are any


class Linker:
    """Embeds the semantic model's metrics and dimensions once; links question spans to them."""

    def __init__(self, model: SemanticModel, *, encode=None, values: dict[str, list[str]] | None = None) -> None:
        from eai_ray.processing.mapping.scorer import default_encoder
        self.model = model
        self.encode = encode or default_encoder()
        self.values = values or {}
        self.metric_texts: list[tuple[str, str]] = []
        for m in model.metrics.values():
            for t in [m.name.replace("_", " "), *m.synonyms, m.description]:
                if t:
                    self.metric_texts.append((m.name, t.lower()))
        self.dim_texts: list[tuple[str, str]] = []
        for ref, ent, d in model.dimension_refs():
            words = [d.name.replace("_", " "), f"{ent.name.replace('_', ' ')} {d.name.replace('_', ' ')}", *d.synonyms]
            if d.description:
                words.append(d.description)
            for t in words:
                self.dim_texts.append((ref, t.lower()))
        for ent in model.spec.entities:  # an entity named alone means its label (first) dimension
            if ent.dimensions and ent.dimensions[0].type == "categorical":  # a date or number is no label
                for t in [ent.name.replace("_", " "), *ent.synonyms]:
                    self.dim_texts.append((f"{ent.name}.{ent.dimensions[0].name}", t.lower()))
        self.vocabulary = {w for _, t in self.metric_texts + self.dim_texts if len(t.split()) <= 3 for w in _words(t)}
        self.schema_phrases = sorted({t for _, t in self.metric_texts + self.dim_texts if len(t.split()) <= 3},
                                     key=len, reverse=True)
        self.mvecs = self.encode([t for _, t in self.metric_texts])
        self.dvecs = self.encode([t for _, t in self.dim_texts])

    def texts_of(self, ref: str) -> list[str]:
        """The names, synonyms and description a dimension is linked by."""
        return [t for r, t in self.dim_texts if r == ref]

    def best(self, phrase: str, kind: str, *, allowed=None) -> tuple[str | None, float]:
        texts, vecs = (self.metric_texts, self.mvecs) if kind == "metric" else (self.dim_texts, self.dvecs)
        phrase = phrase.lower().strip()
        if not phrase:
            return None, 0.0
        v = self.encode([phrase])[0]
        sims = vecs @ v
        best: dict[str, float] = {}
        ptoks = set(_words(phrase))
        for (name, text), s in zip(texts, sims):
            if allowed is not None and name not in allowed:
                continue
            s = float(s)
            if text == phrase:
                s += 0.3
            elif ptoks and ptoks <= set(_words(text)):
                s += 0.1
            best[name] = max(best.get(name, -1.0), s)
        if not best:
            return None, 0.0
        name = max(best, key=best.__getitem__)
        return name, best[name]


def _words(s: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", s.lower())


def _spans(words: list[str], n_max: int = 4) -> list[tuple[int, int, str]]:
    out = []
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + n_max) + 1):
            span = words[i:j]
            if span[0] in _STOP or span[-1] in _STOP:
                continue
            out.append((i, j, " ".join(span)))
    return out


def parse_question(question: str, model: SemanticModel, linker: Linker, *, today: dt.date | None = None) -> Plan:
    """Link a question to metrics, dimensions, filters, a time range, ordering and a limit."""
    # names the steps below reuse, each for its own purpose
    m: re.Match[str] | None
    ref: str | None
    name: str | None
    ph: str | None
    op: FilterOp
    today = today or dt.date.today()
    plan = Plan()
    q = question.strip()
    qc = _drop_definitions(q)
    qc = re.sub(r"(?<=[a-zA-Z])'[sS]\b|(?<=[a-zA-Z][sS])'(?=\s)", "", qc)  # "nation's customers" -> "nation customers"
    ql = qc.lower()
    consumed = ql

    # -- filter values (longest first), masked out of the text afterwards
    masked = ql
    for ph in linker.schema_phrases:  # 'ship mode' is a column name, not the value 'SHIP'
        if len(ph.split()) >= 2:
            masked = re.sub(r"(?<![a-z0-9])" + re.escape(ph) + r"(?![a-z0-9])", lambda m: "#" * len(m.group()), masked)
    hits = []
    for ref, vals in linker.values.items():
        for v in vals:
            if len(v) < 2:
                continue
            for form in (v.lower(), *_demonyms(v)):  # "German customers" -> GERMANY
                for m in re.finditer(r"(?<![A-Za-z0-9])" + re.escape(form) + r"(?![A-Za-z0-9])", masked):
                    raw = qc[m.start():m.end()]
                    if raw != v and raw.islower() and form in linker.vocabulary:
                        continue  # "ship year", "suppliers that ship the most": the word, not the value SHIP
                    hits.append((m.start(), m.end(), ref, v))
    hits += _code_hits(qc, linker)  # "return flag of R", "status = 'F'"
    hits.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
    taken: list[tuple[int, int]] = []
    by_value: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for s, e, ref, v in hits:
        if any(s < b and a < e for a, b in taken if (a, b) != (s, e)):
            continue
        if (s, e) not in by_value:
            taken.append((s, e))
        by_value.setdefault((s, e), []).append((ref, v))
    for (s, e), cands in sorted(by_value.items()):
        ref, v = _pick_value_dim(ql, s, cands, model)
        plan.filters.append(Filter(ref, "=", v))
        plan.notes.append(f"'{v}' -> {ref}")
        consumed = consumed[:s] + " " * (e - s) + consumed[e:]

    # -- time range
    tr, consumed = _time_range(consumed, today)
    if tr:
        plan.time_range = tr

    # -- one date column against another: "received after their commit date", "shipped before the due date"
    time_refs = {ref for ref, ent, d in model.dimension_refs() if d.type == "time"}
    for m in re.finditer(r"\b((?:[a-z_]+\s){0,1}[a-z_]+)\s+(after|later than|before|earlier than|past)\s+"
                         r"(?:the\s+|their\s+|its\s+|his\s+|her\s+)?((?:[a-z_]+\s?){1,3}?)(?=\s*(?:\b(?:in|for|with|and|"
                         r"by|per|during|of|on)\b|,|\?|\.|$))", consumed):
        left = " ".join(w for w in _words(m.group(1)) if w not in _STOP)
        right = " ".join(w for w in _words(m.group(3)) if w not in _STOP)
        lref, ls = linker.best(left, "dim", allowed=time_refs) if left else (None, 0.0)
        rref, rs = linker.best(right, "dim", allowed=time_refs) if right else (None, 0.0)
        if lref and rref and lref != rref and min(ls, rs) >= 0.6 and lref.split(".")[0] == rref.split(".")[0]:
            op = "<" if m.group(2) in ("before", "earlier than") else ">"
            plan.filters.append(Filter(lref, op, DimRef(rref)))
            plan.scores.append(min(1.0, ls, rs))
            plan.notes.append(f"{lref} {op} {rref}")
            consumed = consumed[:m.start()] + " " * (m.end() - m.start()) + consumed[m.end():]

    # -- "average number of days between order date and ship date": a date difference, averaged
    m = re.search(r"\b(average|avg|mean|total|maximum|max|minimum|min)\s+(?:number\s+of\s+)?(?:[a-z]+\s+){0,1}?days?\s+"
                  r"(?:between|from)?\s*(?:the\s+|their\s+)?([a-z]+(?:\s[a-z]+)?)\s+(?:and|to|until)\s+(?:the\s+|their\s+)?"
                  r"([a-z]+(?:\s[a-z]+)?)\b", consumed)
    if m:
        a, sa = linker.best(m.group(2), "dim", allowed=time_refs)
        b, sb = linker.best(m.group(3), "dim", allowed=time_refs)
        base = _many_side(model, a, b) if a and b and a != b and min(sa, sb) >= 0.6 else None
        if base:
            assert a is not None and b is not None  # base is set only when both are
            agg = next(x for pat, x in _AGG_WORDS if re.fullmatch(pat, m.group(1)))
            ea, da, _ = model._dim(a)
            eb, db, _ = model._dim(b)
            expr = f"DATE_DIFF('day', {ea.name}.{da.sql}, {eb.name}.{db.sql})"
            name = f"{agg}_days_{da.name}_to_{db.name}"
            plan.aggregates.append((name, f"{base}:{expr}", agg))
            plan.metrics.append(name)
            plan.scores.append(min(1.0, sa, sb))
            plan.notes.append(f"{agg} days {a} -> {b}")
            consumed = consumed[:m.start()] + " " * (m.end() - m.start()) + consumed[m.end():]

    # -- numeric comparisons
    comps: list[tuple[str, str, FilterOp, float]] = []
    for m in re.finditer(r"((?:[a-z_]+\s){0,4}?)(more than|greater than|higher than|larger than|bigger than|over|above|"
                         r"at least|exceeding|less than|fewer than|lower than|smaller than|below|under|at most)\s+\$?"
                         r"(\d[\d,]*(?:\.\d+)?(?:\s*%|\s+percent\b)?)\s*((?:[a-z_]+\s?){0,3})", consumed):
        before, cmp_, num, after = m.group(1), m.group(2), m.group(3), m.group(4)
        pct = num.endswith("%") or num.endswith("percent")
        value = float(re.sub(r"[^\d.]", "", num.replace("percent", "")))
        if pct:  # "above 5%": rates are stored as fractions
            value = round(value / 100, 10)
        value = int(value) if value.is_integer() else value
        op = ">" if cmp_ in ("more than", "greater than", "higher than", "larger than", "bigger than", "over",
                             "above", "exceeding") else "<" if cmp_ in ("less than", "fewer than", "lower than",
                                                                        "smaller than", "below", "under") else \
            ">=" if cmp_ == "at least" else "<="
        comps.append((before.strip(), after.strip(), op, value))
        consumed = consumed[:m.start(2)] + " " * (m.end(3) - m.start(2)) + consumed[m.end(3):]
    for m in re.finditer(r"\b(negative|positive)\s+((?:[a-z_]+\s?){1,3})", consumed):  # "a negative balance"
        comps.append(("", m.group(2).strip(), "<" if m.group(1) == "negative" else ">", 0))
        consumed = consumed[:m.start(1)] + " " * (m.end(1) - m.start(1)) + consumed[m.end(1):]

    # -- order / limit
    m = re.search(r"\b(top|bottom|first|best|worst|largest|smallest|highest|lowest)\s+(\d+)\b", consumed)
    superl = re.search(r"\b(highest|most|largest|biggest|greatest|best|top|maximum|lowest|least|smallest|fewest|"
                       r"worst|minimum|bottom)\b", consumed)
    desc = True
    wn = None if m else re.search(r"\b(which|what)\s+(\d+)\s+(?=[a-z])", consumed)  # "which 5 suppliers ..."
    if wn:
        plan.limit = int(wn.group(2))
        desc = not (superl and superl.group(1) in ("lowest", "least", "smallest", "fewest", "worst", "minimum", "bottom"))
        consumed = consumed[:wn.start(2)] + " " * (wn.end(2) - wn.start(2)) + consumed[wn.end(2):]
    elif m:
        plan.limit = int(m.group(2))
        desc = m.group(1) not in ("bottom", "worst", "smallest", "lowest")
        consumed = consumed[:m.start(2)] + " " * (m.end(2) - m.start(2)) + consumed[m.end(2):]
    elif superl and re.search(r"\b(which|what|who)\b", consumed) and not re.search(
            r"\b(rank|sorted|order(ed)? by)\b", consumed):
        plan.limit = 1
        desc = superl.group(1) not in ("lowest", "least", "smallest", "fewest", "worst", "minimum", "bottom")
    elif superl:
        desc = superl.group(1) not in ("lowest", "least", "smallest", "fewest", "worst", "minimum", "bottom")

    # -- "size 15", "of size 15": equality on a numeric dimension (checked strictly when linked)
    for m in re.finditer(r"\b([a-z_]+(?:\s[a-z_]+)?)\s+(?:of\s+|=\s*|equal to\s+|equals\s+)?(\d+(?:\.\d+)?)\b(?!\s*%)",
                         consumed):
        pw = [w for w in m.group(1).split() if w not in _STOP and w not in _GRAINS]
        if pw:
            value = float(m.group(2))
            comps.append((" ".join(pw), "", "=", int(value) if value.is_integer() else value))
            consumed = consumed[:m.start(2)] + " " * (m.end(2) - m.start(2)) + consumed[m.end(2):]
    # -- "type contains BRASS", "name starting with X": pattern filters on a categorical dimension
    cat_dims = {ref for ref, ent, d in model.dimension_refs() if d.type == "categorical"}
    for m in re.finditer(r"((?:[a-z_]+\s){1,3}?)(contains?|containing|starting with|starts with|"
                         r"beginning with|begins with|ending with|ends with)\s+['\"]?([a-z0-9#\-]+)['\"]?", consumed):
        pw = [w for w in m.group(1).split() if w not in _STOP and w not in ("whose", "where", "that", "who")]
        ref, score = linker.best(" ".join(pw[-2:]), "dim", allowed=cat_dims) if pw else (None, 0.0)
        if ref and score >= 0.45:
            v, how = m.group(3), m.group(2)
            pat = f"{v}%" if how.startswith(("start", "begin")) else f"%{v}" if how.startswith("end") else f"%{v}%"
            plan.filters.append(Filter(ref, "like", pat))
            plan.notes.append(f"{how} {v!r} -> {ref}")
            consumed = consumed[:m.start(2)] + " " * (m.end(3) - m.start(2)) + consumed[m.end(3):]
    for m in re.finditer(r"\b(?:the\s+)?(?:word|string|text|term)\s+['\"]?([a-z0-9#\-]+)['\"]?\s+(?:in|inside)\s+"
                         r"(?:their|its|the|his|her)\s+((?:[a-z_]+\s?){1,2})", consumed):  # "the word 'green' in their name"
        ph = " ".join(w for w in _words(m.group(2)) if w not in _STOP)
        ent_hint = " ".join(w for w in _words(consumed[:m.start()]) if w not in _STOP)[-40:]
        ref, score = linker.best(f"{ent_hint.split()[-1]} {ph}" if ent_hint else ph, "dim", allowed=cat_dims) \
            if ph else (None, 0.0)
        if ref and score >= 0.45:
            plan.filters.append(Filter(ref, "like", f"%{m.group(1)}%"))
            plan.notes.append(f"contains {m.group(1)!r} -> {ref}")
            consumed = consumed[:m.start()] + " " * (m.end() - m.start()) + consumed[m.end():]

    # -- group-by dimensions
    dims: list[tuple[str, float]] = []
    group_phrases = []
    entity_nouns = {w.lower() for e in model.spec.entities for w in [e.name.replace("_", " "), *e.synonyms]}
    for g in _GROUP_CUE.finditer(consumed):
        phrase_words = g.group(1).split()
        if "  " in consumed[g.start():g.start(1)]:
            continue  # "shipped by AIR in 1995 arrived ...": the cue's object was a value, already a filter
        prev = re.findall(r"[a-z]+", consumed[:g.start()])[-1:]
        if g.group(0).lower().startswith("by") and prev and phrase_words and phrase_words[0] not in ("each", "every") \
                and not set(phrase_words) & set(_GRAINS) \
                and (prev[0] in _PASSIVE or (prev[0].endswith("ed") and prev[0] not in ("grouped", "ranked"))) \
                and " ".join(w for w in phrase_words if w not in _LOCATED) in entity_nouns and plan.filters:
            continue  # "orders placed by customers in EUROPE": the agent (filtered), not a grouping
        if g.group(0).lower().startswith("across") and phrase_words[:1] in (["all"], ["every"]):
            continue  # "across all suppliers": a total, not a grouping
        if set(phrase_words) <= _AMOUNT_WORDS and re.match(r"\s*of\b", consumed[g.end():]):
            continue  # "top 3 nations by number of customers": a metric, not a grouping
        if phrase_words and phrase_words[0] in _AMOUNT_WORDS and g.group(0).lower().startswith("by"):
            continue  # "top 3 clerks by total order value": the ranking metric, not a grouping
        group_phrases.append(g.group(1).strip())
        rest = consumed[g.end():]
        while True:
            more = re.match(r"\s*(?:,|and)\s+((?:[a-z_]+\s?){1,3}?)(?=\s*(?:\b(?:in|for|with|where|during|and|of|"
                            r"on)\b|,|\?|\.|$))", rest)
            if not more:
                break
            group_phrases.append(more.group(1).strip())
            rest = rest[more.end():]
    lead = re.match(r"^\s*((?:[a-z_]+\s?){1,3}?)\s+(?:with|that|whose|having|where)\b", consumed)
    if lead:
        group_phrases.append(lead.group(1).strip())
    wh = re.search(r"\b(?:which|what|each|every)\s+((?:[a-z_]+\s?){1,3}?)(?=\s+(?:has|have|had|is|are|was|were|"
                   r"bought|sold|placed|shipped|generated|made|spent|with|by|in|got|received|did|[a-z]+ed)\b)", consumed)
    if wh:
        group_phrases.append(wh.group(1).strip())
    ln = re.match(r"^\s*(?:list|show|name|display|give me|find|get)\s+(?:me\s+)?(?:the\s+)?(\d+)\s+"
                  r"((?:[a-z_]+\s?){1,3}?)(?=\s+(?:with|by|that|who|whose|which|in|for|from|ranked|sorted|having|of)\b|"
                  r"\s*[?.]?\s*$)", consumed)
    if ln and plan.limit is None:  # "list the 10 parts with the highest revenue"
        plan.limit = int(ln.group(1))
        group_phrases.append(ln.group(2).strip())
    tm = re.search(r"\b(?:top|bottom|first|best|worst|largest|smallest|highest|lowest)\s+((?:[a-z_]+\s*){1,4})", consumed)
    if tm and m:
        head = []
        for w in tm.group(1).split():
            if w in ("by", "in", "with", "for", "of", "ranked", "terms", "on", "and"):
                break
            head.append(w)
        if head:
            group_phrases.append(" ".join(head))
    for word in re.findall(r"\b(yearly|annual|annually|monthly|quarterly|weekly|daily)\b", consumed):
        group_phrases.append(word)
    lst = re.match(r"^\s*(?:list|show|name|display|give me|what are)\s+(?:all\s+)?(?:the\s+)?((?:[a-z_]+\s?){1,3}?)"
                   r"(?=\s+(?:in|from|of|with|whose|that|who|where|for)\b|\s*\??$)", consumed)
    grains_seen: list[str] = []
    dim_phrases: list[str] = []
    time_dims = {ref for ref, ent, d in model.dimension_refs() if d.type == "time"}
    dim_of_phrase: dict[str, str] = {}
    for phrase in group_phrases:
        words = [w for w in _words(phrase) if w not in _STOP]
        if not words:
            continue
        if len(words) == 1 and words[0] in _GRAINS:
            grains_seen.append(_GRAINS[words[0]])
            continue
        grain_words = [w for w in words if w in _GRAINS]
        if grain_words and len(words) > len(grain_words):  # "by order year": a time dimension at a grain
            rest = " ".join(w for w in words if w not in _GRAINS)
            tref, tscore = linker.best(rest, "dim", allowed=time_dims)
            if tref and tscore >= 0.45:
                dims.append((f"{tref}__{_GRAINS[grain_words[0]]}", tscore))
                dim_phrases.append(" ".join(words))
                continue
        ref, score = linker.best(" ".join(words), "dim")
        mref, mscore = linker.best(" ".join(words), "metric")
        if ref and score >= 0.45 and not (mref and mscore > score):
            dims.append((ref, score))
            dim_phrases.append(" ".join(words))
            dim_of_phrase[ref] = " ".join(words)
    # -- ad-hoc aggregates over dimensions: "earliest order date", "how many distinct brands",
    #    "total supply cost" where no metric of the model says it better
    kinds = {ref: d.type for ref, ent, d in model.dimension_refs()}
    nouns = {_stem(w) for n in entity_nouns for w in n.split()}
    for m in _ADHOC.finditer(consumed):
        phrase = " ".join(w for w in _words(m.group(3)) if w not in _STOP)
        pwords = {_stem(w) for w in phrase.split()}
        if not phrase or pwords & (_AMOUNT_WORDS | {"amount", "value", "number"}):
            continue  # "average number of days": not an aggregate of a column named 'number'
        found = []
        for word in [w.strip() for w in m.group(1).split(",")] + ([m.group(2)] if m.group(2) else []):
            agg = next(a for pat, a in _AGG_WORDS if re.fullmatch(pat, word))
            if agg == "count_distinct" and pwords & nouns:
                continue  # "how many different suppliers": the model's count of suppliers
            dref, ds = linker.best(phrase, "dim", allowed={r for r, k in kinds.items() if k in _ADHOC_TYPES[agg]})
            ms = max(linker.best(f"{word} {phrase}", "metric")[1], linker.best(phrase, "metric")[1])
            whole = linker.best(f"{word} {phrase}", "dim")  # "total price" names a column, it sums nothing
            if not dref or ds < 0.6 or ms >= ds - 0.05 or (whole[0] and whole[1] >= ds):
                continue
            said = {_stem(w) for t in linker.texts_of(dref) for w in _words(t)}
            if not pwords <= said and ds < 0.9:  # the words must name the column, not merely resemble it
                continue
            found.append((f"{agg}_{dref.split('.', 1)[1]}", dref, agg, ds, word))
        for name, dref, agg, ds, word in found:
            plan.aggregates.append((name, dref, agg))
            plan.metrics.append(name)
            plan.scores.append(min(1.0, ds))
            plan.notes.append(f"{word} {phrase} -> {agg}({dref})")
        if found:
            consumed = consumed[:m.start()] + " " * (m.end() - m.start()) + consumed[m.end():]
    if plan.aggregates:
        model = plan.model = model.with_aggregates(plan.aggregates)
    # -- metrics
    words = _words(consumed)
    met_scores: dict[str, tuple[float, int, int]] = {}
    for i, j, span in _spans(words):
        name, score = linker.best(span, "metric")
        if i > 0 and words[i - 1] in ("from", "for", "to", "in", "with", "among", "by", "per", "each", "on", "across",
                                      "all"):
            score -= 0.25  # "revenue from customers": the entity qualifies the metric, it is not the metric
        elif i > 1 and words[i - 1] == "of" and words[i - 2] not in _AMOUNT_WORDS | {"how", "quantity", "value"}:
            score -= 0.25  # "revenue of orders with priority ...": qualifies; "number of orders" does not
        if lst and span in lst.group(1) and (span in entity_nouns or _stem(span) in entity_nouns
                                             or span.rstrip("s") in entity_nouns):
            continue  # "list the suppliers": a listing, not a count
        if any(span in g for g in dim_phrases):
            score -= 0.3  # "top 10 customers by revenue": the grouping noun is not the metric
        score += 0.03 * (j - i - 1)  # longer exact phrases are more specific
        if i > 1 and words[i - 2:i] in (["how", "much"], ["how", "many"]):
            score += 0.1  # "how much revenue came from returned line items": the asked amount
        elif i > 1 and words[i - 1].endswith("ed") and words[i - 2] in ("from", "for", "of", "with", "among", "by"):
            score -= 0.25  # "from returned line items": qualifies, like "from line items"
        if name and score > met_scores.get(name, (0, 0, 0))[0]:
            met_scores[name] = (score, i, j)
    ranked = sorted(met_scores.items(), key=lambda kv: -kv[1][0])
    metric_span = ""
    listed = bool(re.search(r"\band\b|,", consumed))
    if ranked and ranked[0][1][0] >= 0.55 and not plan.aggregates:
        top, (s0, i0, j0) = ranked[0]
        metric_span = " ".join(words[i0:j0])
        plan.metrics.append(top)
        plan.scores.append(min(1.0, s0))
    if ranked and listed and (plan.metrics or plan.aggregates):
        # "total quantity, total extended price and average discount": each named metric, spans apart
        spans = [met_scores[x][1:] for x in plan.metrics if x in met_scores]
        top_s = max([met_scores[x][0] for x in plan.metrics if x in met_scores] or [0.8])
        for name, (sn, i, j) in ranked:
            if name in plan.metrics or sn < 0.7 or sn < top_s - 0.25 or len(plan.metrics) >= 4:
                continue
            if all(j <= a or i >= b for a, b in spans) and _listed_apart(words, spans, (i, j)):
                plan.metrics.append(name)
                plan.scores.append(min(1.0, sn))
                spans.append((i, j))
    # numeric comparisons -> WHERE on a numeric dimension or HAVING on a metric
    numeric_dims = {ref for ref, ent, d in model.dimension_refs() if d.type == "numeric"}
    base0 = model.base_entity(plan.metrics[0]) if plan.metrics else None
    near = _near_dims(model, base0) if base0 else None
    # (near is set only for a base entity)
    near_ents = {r.split(".")[0] for r in near} | {base0} if near is not None and base0 is not None else set()
    for before, after, op, value in comps:
        best: tuple[str | None, float, str] = (None, 0.0, "")
        bwords = [w for w in _words(before) if w not in _STOP]
        # the nearest words first: "TRUCK shipments with a quantity over 40" compares the quantity
        for phrase in (after, *(bwords[-1:] if len(bwords) > 1 else []), before):
            ph = " ".join(w for w in _words(phrase) if w not in _STOP)
            if not ph:
                continue
            if best[0] and best[1] >= 0.8:
                break
            mref, ms = linker.best(ph, "metric")
            dref, ds = linker.best(ph, "dim", allowed=numeric_dims)
            if near is not None and dref and dref not in near:  # a filter across a fan-out is rarely meant
                nref, ns = linker.best(ph, "dim", allowed=numeric_dims & near)
                if nref and ns >= 0.5:
                    dref, ds = nref, ns
            if mref and near is not None and mref not in plan.metrics and model.base_entity(mref) not in near_ents:
                mref = None  # a condition on another entity's total ("suppliers with balance over X") is no HAVING
            if op != "=" and mref and ms > best[1] and ms >= 0.5 and (phrase is after or not dref or ms > ds):
                best = (mref, ms, "metric")
            if dref and ds > best[1] and ds >= (0.6 if op == "=" else 0.45):
                best = (dref, ds, "dim")
        if best[0]:
            plan.filters.append(Filter(best[0], op, value))
            if best[2] == "metric" and best[0] not in plan.metrics:
                plan.metrics.append(best[0])
                plan.scores.append(min(1.0, best[1]))
            plan.notes.append(f"{op} {value} -> {best[0]}")
    if lst and not plan.metrics:
        ref, score = linker.best(" ".join(w for w in _words(lst.group(1)) if w not in _STOP), "dim")
        if ref and score >= 0.45:
            dims.append((ref, score))
    cols = _listed_columns(consumed, linker, entity_nouns)
    if cols and not plan.aggregates and not any(f.field in model.metrics for f in plan.filters):
        # "list the names and account balances of customers in ...": rows, not a total
        counts = {mt for mt in plan.metrics if model._measure(model._simple_leaves(mt)[0]).agg in ("count_distinct", "count")}
        if set(plan.metrics) <= counts or not metric_span or all(metric_span not in c for c in cols):
            plan.metrics, plan.scores = [], [sc for _, sc in cols]
            dims = [(r, sc) for r, sc in cols] + [d for d in dims if d[0] not in {r for r, _ in cols}
                                                  and "__" in d[0]]
    # time dimension and grains
    base = model.base_entity(plan.metrics[0]) if plan.metrics else None
    td = _time_dimension(consumed, model, base)
    if grains_seen and td:
        for grain in grains_seen:
            dims.append((f"{td}__{grain}", 0.9))
    if near is not None:
        relinked = []
        for ref, score in dims:
            ph = dim_of_phrase.get(ref)
            if ph and ref not in near:
                # "suppliers per nation": the same column in the role the metric reaches (supplier's nation)
                role = [r for r in near if _dim_key(model, r) == _dim_key(model, ref)]
                nref, ns = (role[0], score) if len(role) == 1 else linker.best(ph, "dim", allowed=near)
                if nref and ns >= 0.45 and ns >= score - 0.15:
                    ref, score = nref, ns
            relinked.append((ref, score))
        dims = relinked
    seen = set()
    for ref, score in dims:
        ph = dim_of_phrase.get(ref)
        if ph and metric_span and re.search(rf"\b(?:per|by|each)\s+{re.escape(ph)}\b", metric_span):
            continue  # "revenue per order": part of the metric's name, not a grouping
        if ref not in seen and not any(f.field == ref and f.op == "=" for f in plan.filters):
            seen.add(ref)
            plan.dimensions.append(ref)
            plan.scores.append(min(1.0, score))
    if plan.time_range:
        plan.time_dimension = td
        if td is None:
            plan.notes.append("time range ignored: no time dimension reachable")
            plan.scores.append(0.3)
    if plan.metrics and (plan.limit or superl):
        plan.order_by = [(plan.metrics[0], desc)]
    eq: dict[str, list[Filter]] = {}
    for f in plan.filters:
        if f.op == "=" and isinstance(f.value, str):
            eq.setdefault(f.field, []).append(f)
    for fld, fs in eq.items():  # a row has one value per column: "MAIL or SHIP", "MAIL and SHIP" mean either
        if len(fs) > 1:
            plan.filters = [f for f in plan.filters if f not in fs] + [Filter(fld, "in", [f.value for f in fs])]
    plan.unexplained = _unexplained(consumed, plan, model, linker)
    return plan


def _unexplained(text: str, plan: Plan, model: SemanticModel, linker: Linker) -> list[str]:
    """Content words of the question that no metric, dimension, filter or pattern of the plan accounts
    for ("never", "late", "profit"): the main sign that an answer misses part of the question."""
    said: set[str] = set()
    for name in plan.metrics:
        said |= {w for n, t in linker.metric_texts if n == name for w in _words(t)}
    refs = [d.split("__")[0] for d in plan.dimensions] + [f.field for f in plan.filters] \
        + [r for _, r, _ in plan.aggregates if ":" not in r] + ([plan.time_dimension] if plan.time_dimension else [])
    ents = set()
    for ref in refs:
        said |= {w for t in linker.texts_of(ref) for w in _words(t)}
        ents.add(ref.split(".")[0])
    for name in plan.metrics:
        try:
            ents.add(model.base_entity(name))
        except UserError:
            pass
    for e in model.spec.entities:
        if e.name in ents:
            said |= {w for t in [e.name.replace("_", " "), *e.synonyms] for w in _words(t)}
    said = {_stem(w) for w in said}
    return [w for w in _words(text) if not w.isdigit() and w not in _GENERIC and _stem(w) not in said]


def _dim_key(model: SemanticModel, ref: str) -> tuple[str, str]:
    ent, _, name = ref.partition(".")
    e = model.entities[ent]
    d = e.dimension(name)
    return (e.table, d.sql if d else name)


def _near_dims(model: SemanticModel, base: str) -> set[str]:
    """Dimensions of the entities `base` reaches by many-to-one joins only (no fan-out)."""
    edges = model._edges()
    seen, todo = {base}, [base]
    while todo:
        cur = todo.pop()
        for nxt, _a, _b, m2o in edges[cur]:
            if m2o and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return {ref for ref, ent, d in model.dimension_refs() if ent.name in seen}


_SHARE = re.compile(r"^\s*(?:what(?:'s|\s+is|\s+was|\s+are)?\s+)?(?:the\s+)?(percentage|percent|share|fraction|"
                    r"proportion|ratio)\s+of\s+(.+)$", re.I)
_HAVE = re.compile(r"^\s*(?:on average,?\s+|in average,?\s+)how many\s+(.+?)\s+(?:does|do|did)\s+(?:an?|each|every|one)\s+"
                   r"([a-z]+(?:\s[a-z]+)??)\s*(.*?)\s+(?:have|has|contain|include|get|receive)\b"
                   r"\s*(.*?)[?.]?\s*$", re.I)
_PER = re.compile(r"\b(?:average|avg|mean)\s+(?:number|count)\s+of\s+(.+?)\s+(?:per|for each|by each)\s+(?:an?\s+)?"
                  r"([a-z ]+?)(?=\s+(?:in|for|during|from|with|since|before|after)\b|\s*[?.]?\s*$)", re.I)


def _composite(question: str, model: SemanticModel, linker: Linker, today) -> tuple[str, str, float] | None:
    """Two metric queries combined: "what share/percentage of X are Y" (X with the conditions over X
    without them) and "average number of X per Y" (count of X over count of Y)."""
    def plan_sql(text, keep_filters=True, filters=None):
        p = parse_question(text, model, linker, today=today)
        if len(p.metrics) != 1 or p.dimensions:
            return None, p
        kept = p.filters if keep_filters else (filters or [])
        q = (p.model or model).compile(metrics=p.metrics, filters=kept, time_range=p.time_range,
                                       time_dimension=p.time_dimension)
        return q.sql, p

    m = _SHARE.match(question.strip())
    context = ""
    if not m:  # "For items shipped in 1995, what percentage of revenue came from ...": the clause holds for both
        c = re.match(r"^\s*(.+?),\s*(.*)$", question.strip())
        m = _SHARE.match(c.group(2)) if c else None
        context = c.group(1) if m and c else ""
    if m:
        num, p = plan_sql(f"{m.group(2)} {context}".strip())
        if num is None or not any(f.field not in model.metrics for f in p.filters):
            return None
        both = parse_question(context, model, linker, today=today).filters if context else []
        den, _ = plan_sql(f"{m.group(2)} {context}".strip(), keep_filters=False, filters=both)
        metric, scale = p.metrics[0], "100.0 * " if m.group(1).lower().startswith("percent") else ""
        sql = (f"SELECT {scale}CAST(n.{metric} AS DOUBLE) / NULLIF(d.{metric}, 0) AS {m.group(1).lower()} "
               f"FROM ({num}) AS n CROSS JOIN ({den}) AS d")
        return "semantic+share", sql, round(0.9 * float(np.mean(p.scores or [0.5])), 3)
    m = _HAVE.match(question.strip())
    if m:  # "on average, how many line items does an order placed in 1993 have?"
        num, p1 = plan_sql(f"number of {m.group(1)} {m.group(3)} {m.group(4)}")
        den, p2 = plan_sql(f"number of {m.group(2)} {m.group(3)} {m.group(4)}")
        if num is not None and den is not None and p1.metrics != p2.metrics:
            sql = (f"SELECT CAST(n.{p1.metrics[0]} AS DOUBLE) / NULLIF(d.{p2.metrics[0]}, 0) AS average_per "
                   f"FROM ({num}) AS n CROSS JOIN ({den}) AS d")
            return "semantic+ratio", sql, round(0.9 * float(np.mean((p1.scores or [0.5]) + (p2.scores or [0.5]))), 3)
    m = _PER.search(question.strip())
    if m:
        num, p1 = plan_sql(question[:m.start()] + f"number of {m.group(1)}" + question[m.end():])
        den, p2 = plan_sql(question[:m.start()] + f"number of {m.group(2)}" + question[m.end():])
        if num is None or den is None or p1.metrics == p2.metrics:
            return None
        sql = (f"SELECT CAST(n.{p1.metrics[0]} AS DOUBLE) / NULLIF(d.{p2.metrics[0]}, 0) AS average_per "
               f"FROM ({num}) AS n CROSS JOIN ({den}) AS d")
        return "semantic+ratio", sql, round(0.9 * float(np.mean((p1.scores or [0.5]) + (p2.scores or [0.5]))), 3)
    return None


def _pick_value_dim(ql: str, start: int, cands: list[tuple[str, str]], model: SemanticModel) -> tuple[str, str]:
    if len(cands) == 1:
        return cands[0]
    window = {_stem(w) for w in _words(ql[max(0, start - 60):start])}
    everywhere = {_stem(w) for w in _words(ql)}

    def score(c):
        ent = model.entities[c[0].split(".")[0]]
        names = set(_words(ent.name)) | {w for s in ent.synonyms for w in _words(s)} | set(_words(ent.description))
        for other in model.spec.entities:  # "the country of the supplier": the supplier's synonyms too (vendors)
            if other.name in names and other is not ent:
                names |= {w for s in other.synonyms for w in _words(s)}
        names = {_stem(w) for w in names} - {"nation", "country", "region", "the", "of"}
        return (len(names & window), len(names & everywhere))
    return max(cands, key=score)


# adjectives and demonyms of countries and regions ("German customers", "Asian suppliers"): general
# English, the same for any catalog whose values are country or region names
_DEMONYM = {
    "afghanistan": "afghan", "albania": "albanian", "algeria": "algerian", "argentina": "argentine argentinian",
    "australia": "australian", "austria": "austrian", "bangladesh": "bangladeshi", "belgium": "belgian",
    "bolivia": "bolivian", "brazil": "brazilian", "bulgaria": "bulgarian", "cambodia": "cambodian",
    "cameroon": "cameroonian", "canada": "canadian", "chile": "chilean", "china": "chinese",
    "colombia": "colombian", "croatia": "croatian", "cuba": "cuban", "czechia": "czech", "denmark": "danish",
    "ecuador": "ecuadorian", "egypt": "egyptian", "ethiopia": "ethiopian", "finland": "finnish",
    "france": "french", "germany": "german", "ghana": "ghanaian", "greece": "greek", "hungary": "hungarian",
    "iceland": "icelandic", "india": "indian", "indonesia": "indonesian", "iran": "iranian", "iraq": "iraqi",
    "ireland": "irish", "israel": "israeli", "italy": "italian", "japan": "japanese", "jordan": "jordanian",
    "kenya": "kenyan", "korea": "korean", "south korea": "south korean|korean", "lebanon": "lebanese",
    "malaysia": "malaysian", "mexico": "mexican", "morocco": "moroccan", "mozambique": "mozambican",
    "netherlands": "dutch", "new zealand": "new zealander", "nigeria": "nigerian", "norway": "norwegian",
    "pakistan": "pakistani", "peru": "peruvian", "philippines": "filipino philippine", "poland": "polish",
    "portugal": "portuguese", "romania": "romanian", "russia": "russian", "saudi arabia": "saudi",
    "serbia": "serbian", "singapore": "singaporean", "south africa": "south african", "spain": "spanish",
    "sweden": "swedish", "switzerland": "swiss", "syria": "syrian", "taiwan": "taiwanese", "thailand": "thai",
    "tunisia": "tunisian", "turkey": "turkish", "ukraine": "ukrainian", "united kingdom": "british|uk",
    "united states": "american|usa", "uruguay": "uruguayan", "venezuela": "venezuelan",
    "vietnam": "vietnamese", "africa": "african", "america": "american", "asia": "asian", "europe": "european",
    "middle east": "middle eastern", "oceania": "oceanian", "latin america": "latin american",
    "north america": "north american", "south america": "south american",
}


def _demonyms(value: str) -> tuple[str, ...]:
    """Adjective forms of a country or region value: 'GERMANY' -> ('german',). Forms are separated by
    '|' where one has several words ('south korean|korean'), else by spaces."""
    forms = _DEMONYM.get(value.lower())
    if not forms:
        return ()
    return tuple(forms.split("|") if "|" in forms else forms.split())


def _code_hits(qc: str, linker: Linker) -> list[tuple[int, int, str, str]]:
    """One-letter codes ('R', 'F') are values only right after the name of their column:
    "return flag of R", "status F", "flag = 'A'". Anywhere else a lone letter is just a word."""
    out = []
    for ref, vals in linker.values.items():
        codes = {v for v in vals if len(v) == 1 and v.isalpha()}
        if not codes:
            continue
        for m in re.finditer(r"((?:[a-z_]+\s){1,3}?)(?:of\s+|is\s+|=\s*|equal to\s+|equals\s+)?['\"]?([A-Za-z])['\"]?"
                             r"(?![A-Za-z0-9])", qc.lower()):
            raw = qc[m.start(2):m.end(2)]
            if raw.upper() not in codes or raw.islower():
                continue  # "a" / "i": an article, not the code 'A'
            ph = " ".join(w for w in _words(m.group(1)) if w not in _STOP)
            got, score = linker.best(ph, "dim") if ph else (None, 0.0)
            if got == ref and score >= 0.5:
                out.append((m.start(2), m.end(2), ref, raw.upper()))
    return out


_FORMULA = re.compile(r"\b(times|multiplied|divided|minus|plus|product of|sum of|ratio of)\b|(?<=\s)x(?=\s)|[*/=+]")


def _many_side(model: SemanticModel, a: str, b: str) -> str | None:
    """The entity whose rows both dimensions describe: the one that reaches the other by many-to-one hops."""
    ea, eb = a.split(".")[0], b.split(".")[0]
    for frm, to in ((ea, eb), (eb, ea)):
        try:
            if all(hop[4] for hop in model.join_path(frm, to)):
                return frm
        except UserError:
            continue
    return None


def _listed_columns(text: str, linker: Linker, entity_nouns: set[str]) -> list[tuple[str, float]]:
    """ "list the names and account balances of customers ...", "show part key, name and size of parts":
    the columns asked for, each linked in the sense of the entity named after 'of'."""
    m = re.match(r"^\s*(?:list|show|display|give me|return|get)\s+(?:me\s+)?(?:all\s+)?(?:the\s+)?(.+?)\s+(?:of|for)\s+"
                 r"(?:all\s+|every\s+|each\s+|the\s+|our\s+)?((?:[a-z0-9#_]+\s+){0,3}?)([a-z_]+)\b", text)
    if not m or not re.search(r",|\band\b", m.group(1)):
        return []
    noun = m.group(3)
    if noun not in entity_nouns and _stem(noun) not in entity_nouns and noun.rstrip("s") not in entity_nouns:
        return []
    out = []
    for ph in re.split(r"\s*,\s*|\s+and\s+", m.group(1)):
        words = [w for w in _words(ph) if w not in _STOP]
        if not words:
            return []
        ref, score = linker.best(f"{_stem(noun)} {' '.join(_stem(w) for w in words)}", "dim")
        if not ref or score < 0.6:
            return []
        out.append((ref, score))
    return list(dict.fromkeys(out))


def _listed_apart(words: list[str], spans: list[tuple[int, int]], new: tuple[int, int]) -> bool:
    """A further metric counts only when 'and' or a comma stands between it and the others
    (the words list has no commas: 'and' or an amount word must separate them)."""
    for a, b in spans:
        lo, hi = (b, new[0]) if b <= new[0] else (new[1], a)
        between = words[lo:hi]
        if not between or len(between) > 3 or not ({"and", "plus", "also", "with"} & set(between)
                                                   or between[0] in _AMOUNT_WORDS | {"total", "average"}):
            return False
    return True


def _drop_definitions(q: str) -> str:
    """Formulas that explain a metric name nothing new: "(supply cost times quantity)", ", i.e. price x
    (1 - discount)", "where tax = ...". Other parentheses are read as text: "(return flag R)"."""
    def paren(m):
        inner = m.group(1)
        return " " if _FORMULA.search(inner) or re.match(r"\s*(by|e\.g\.|eg)\b", inner) else f" {inner} "
    prev = None
    while prev != q:  # innermost first: "(extended price x (1 - discount))"
        prev, q = q, re.sub(r"\s*\(([^()]*)\)", paren, q)
    m = re.search(r"(?:,\s*|\s+)(?:i\.e\.?|ie|that is|where\s+[a-z ]{1,30}?\s*(?:=|is defined as|means)|"
                  r"(?:valued|defined|calculated|computed|measured)\s+(?:at|as))\s*,?\s*([^,;?]*)", q, re.I)
    if m and _FORMULA.search(m.group(1)):
        q = q[:m.start()] + " " + q[m.end():]
    return q


def _stem(w: str) -> str:
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    return w[:-1] if w.endswith("s") and len(w) > 3 else w


def _time_dimension(text: str, model: SemanticModel, base: str | None) -> str | None:
    words = set(_words(text))
    best, best_hits = None, 0
    for ref, _ent, d in model.dimension_refs():
        if d.type != "time":
            continue
        keys = set(_words(d.name)) - {"date", "at", "time"} | {w for s in d.synonyms for w in _words(s)} - {"date"}
        hits = len(keys & words)
        if hits > best_hits:
            best, best_hits = ref, hits
    if best:
        return best
    if base and model.entities[base].time_dimension:
        return f"{base}.{model.entities[base].time_dimension}"
    return None


def _time_range(text: str, today: dt.date) -> tuple[tuple[dt.date | None, dt.date | None] | None, str]:
    def cut(m):
        return text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]

    def qstart(y, qn):
        return dt.date(y, 3 * (qn - 1) + 1, 1)

    def add_months(d, n):
        y, mo = divmod(d.month - 1 + n, 12)
        return dt.date(d.year + y, mo + 1, 1)

    m = re.search(r"\bbetween\s+(\d{4}-\d{2}-\d{2})\s+and\s+(\d{4}-\d{2}-\d{2})", text)
    if m:
        return (dt.date.fromisoformat(m.group(1)), dt.date.fromisoformat(m.group(2)) + dt.timedelta(days=1)), cut(m)
    m = re.search(r"\b(?:from|between)\s+((?:19|20)\d\d)\s+(?:to|and|until|through)\s+((?:19|20)\d\d)\b", text)
    if m:
        return (dt.date(int(m.group(1)), 1, 1), dt.date(int(m.group(2)) + 1, 1, 1)), cut(m)
    m = re.search(r"\b(?:in\s+|during\s+)?(?:q([1-4])|the\s+(first|second|third|fourth|1st|2nd|3rd|4th)\s+quarter)"
                  r"\s+(?:of\s+)?((?:19|20)\d\d)\b", text)
    if m:
        qn = int(m.group(1)) if m.group(1) else _ORD[m.group(2)]
        y = int(m.group(3))
        return (qstart(y, qn), add_months(qstart(y, qn), 3)), cut(m)
    m = re.search(r"\b(?:in\s+|during\s+)?(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) +
                  r")\.?\s+(?:of\s+)?((?:19|20)\d\d)\b", text)
    if m:
        start = dt.date(int(m.group(2)), _MONTHS[m.group(1)], 1)
        return (start, add_months(start, 1)), cut(m)
    m = re.search(r"\b(on or before|up to and including|through|before|until|on or after|after|since|from)\s+"
                  r"(\d{4}-\d{2}-\d{2}|(?:19|20)\d\d)\b", text)
    if m:
        v = m.group(2)
        d = dt.date.fromisoformat(v) if "-" in v else dt.date(int(v), 1, 1)
        if m.group(1) in ("on or before", "up to and including", "through"):  # inclusive end
            return (None, d + dt.timedelta(days=1) if "-" in v else dt.date(int(v) + 1, 1, 1)), cut(m)
        if m.group(1) in ("before", "until"):
            return (None, d), cut(m)
        if m.group(1) == "on or after":
            return (d, None), cut(m)
        if m.group(1) == "after" and "-" not in v:
            d = dt.date(int(v) + 1, 1, 1)
        elif m.group(1) == "after":
            d = d + dt.timedelta(days=1)
        return (d, None), cut(m)
    m = re.search(r"\b(?:in|during|for|of)\s+(?:the\s+year\s+)?((?:19|20)\d\d)\b", text)
    if m:
        y = int(m.group(1))
        return (dt.date(y, 1, 1), dt.date(y + 1, 1, 1)), cut(m)
    m = re.search(r"\b(last|past|previous)\s+(\d+\s+)?(day|week|month|quarter|year)s?\b", text)
    if m:
        n = int(m.group(2) or 1)
        unit = m.group(3)
        if unit == "day":
            return (today - dt.timedelta(days=n), today + dt.timedelta(days=1)), cut(m)
        if unit == "week":
            return (today - dt.timedelta(weeks=n), today + dt.timedelta(days=1)), cut(m)
        months = {"month": 1, "quarter": 3, "year": 12}[unit] * n
        if m.group(2):  # "last 3 months": a rolling window
            return (_shift(today, months), today + dt.timedelta(days=1)), cut(m)
        # "last quarter": the previous full calendar period
        if unit == "quarter":
            cur = qstart(today.year, (today.month - 1) // 3 + 1)
            return (add_months(cur, -3), cur), cut(m)
        if unit == "month":
            cur = today.replace(day=1)
            return (add_months(cur, -1), cur), cut(m)
        return (dt.date(today.year - 1, 1, 1), dt.date(today.year, 1, 1)), cut(m)
    m = re.search(r"\b(this|current)\s+(month|quarter|year)\b|\byear to date\b|\bytd\b", text)
    if m:
        unit = m.group(2) or "year"
        if unit == "month":
            start = today.replace(day=1)
        elif unit == "quarter":
            start = qstart(today.year, (today.month - 1) // 3 + 1)
        else:
            start = dt.date(today.year, 1, 1)
        return (start, today + dt.timedelta(days=1)), cut(m)
    years = re.findall(r"(?<![\w#-])((?:19|20)\d\d)(?![\w-])", text)
    if len(years) == 1:  # "orders per month 1995": a bare year is that year
        m = re.search(r"(?<![\w#-])" + years[0] + r"(?![\w-])", text)
        y = int(years[0])
        return (dt.date(y, 1, 1), dt.date(y + 1, 1, 1)), cut(m)
    return None, text


def _shift(today: dt.date, months: int) -> dt.date:
    y, mo = divmod(today.month - 1 - months, 12)
    day = min(today.day, calendar.monthrange(today.year + y, mo + 1)[1])
    return dt.date(today.year + y, mo + 1, day)


# ---------------------------------------------------------------------- values index
def dimension_values(model: SemanticModel, tables: Mapping[str, pa.Table] | None = None, catalog=None,
                     *, max_distinct: int = 300) -> dict[str, list[str]]:
    """Distinct values of low-cardinality categorical dimensions (for filter linking)."""
    out: dict[str, list[str]] = {}
    cache: dict[str, pa.Table] = {}
    for ref, ent, d in model.dimension_refs():
        if d.type != "categorical":
            continue
        if ent.table not in cache:
            try:
                cache[ent.table] = (tables[ent.table] if tables is not None else
                                    catalog.load_table(ent.table).scan().to_arrow())
            except Exception:  # table not built yet: no values for its dimensions
                continue
        data = cache[ent.table]
        try:  # a semantic model's expression runs through the same validator and sandbox as any query
            res = evaluate_over(data, f"CAST({d.sql} AS VARCHAR) AS v", distinct=True, limit=max_distinct + 1)
        except SqlValidationError:
            continue
        rows = [(v,) for v in res.column("v").to_pylist()]
        if len(rows) <= max_distinct:
            out[ref] = [r[0] for r in rows if r[0] is not None and not str(r[0]).isdigit()]
    return out


# ---------------------------------------------------------------------- LLM generation
def llm_sql(question: str, schema: dict[str, dict[str, str]], llm, *, few_shot=(), error: str | None = None,
            previous: str | None = None, timeout: float = 60.0) -> str:
    """Ask an LLM for one SELECT given the schema (and, on repair, the previous SQL and its error)."""
    lines = [f"{t}({', '.join(f'{c} {ty}' for c, ty in cols.items())})" for t, cols in sorted(schema.items())]
    shots = "".join(f"Question: {s['question']}\nSQL: {s['sql']}\n\n" for s in list(few_shot)[-4:])
    prompt = ("Write one DuckDB SQL SELECT query that answers the question. Use only these tables:\n"
              + "\n".join(lines) + "\n\n" + shots + f"Question: {question}\n")
    if error and previous:
        prompt += f"A previous attempt failed.\nSQL: {previous}\nError: {error}\nWrite a corrected query.\n"
    prompt += "SQL: SELECT"
    text = llm.complete(prompt, max_tokens=200, temperature=0.0, stop=["\n\n", ";", "Question:"], timeout=timeout).text
    sql = text.strip()
    m = re.search(r"```(?:sql)?\s*(.*?)```", sql, re.S)
    if m:
        sql = m.group(1).strip()
    if not re.match(r"(?is)^\s*(select|with)\b", sql):
        sql = "SELECT " + sql
    return sql.split(";")[0].strip()


# ---------------------------------------------------------------------- answer
def answer(question: str, *, catalog, semantic: SemanticModel | str | Path | None = None, llm=None,
           execute: bool = True, limit: int = 1000, today: dt.date | None = None, few_shot=(),
           values: dict[str, list[str]] | None = None, linker: Linker | None = None, repairs: int = 2,
           dbt_dir: str | Path | None = None, dbt_name: str | None = None) -> dict[str, Any]:
    """Answer a question with one validated, read-only SELECT.

    Returns {sql, valid, rows, columns, confidence, tables, used_columns, error, method, plan}.
    `catalog`: a pyiceberg catalog or {"ns.table": pa.Table}. `semantic`: a SemanticModel or its
    YAML path. `llm`: any `LLM` (used when the semantic layer cannot answer). Refused questions
    come back with valid False and the reason in `error`.

    Example::

        answer("how many orders per order priority", catalog=tables, semantic="configs/semantic/tpch.yaml")
    """
    out: dict[str, Any] = {"question": question, "sql": None, "valid": False, "rows": [], "columns": [],
                           "confidence": 0.0, "tables": [], "used_columns": [], "error": None,
                           "method": None, "plan": None}
    if not isinstance(question, str) or not question.strip():
        raise UserError("the question is empty")
    why = refusal(question)
    if why:
        out["error"] = f"refused: {why}"
        out["refused"] = True
        return out
    schema = catalog_schema(catalog)
    if isinstance(semantic, (str, Path)):
        semantic = SemanticModel.load(semantic)
    attempts: list[tuple[str, str, float]] = []  # (method, sql, confidence)
    if semantic is not None:
        try:
            if linker is None:
                if values is None:
                    values = dimension_values(semantic, tables=catalog if isinstance(catalog, Mapping) else None,
                                              catalog=None if isinstance(catalog, Mapping) else catalog)
                linker = Linker(semantic, values=values)
            plan = parse_question(question, semantic, linker, today=today)
            out["plan"] = {"metrics": plan.metrics, "dimensions": plan.dimensions,
                           "filters": [(f.field, f.op, str(f.value)) for f in plan.filters],
                           "time_range": [str(x) if x else None for x in plan.time_range] if plan.time_range else None,
                           "time_dimension": plan.time_dimension, "order_by": plan.order_by, "limit": plan.limit,
                           "notes": plan.notes, "unexplained": plan.unexplained}
            comp = _composite(question, semantic, linker, today)
            if comp is not None:  # "share of X that are Y", "average number of X per Y"
                attempts.append(comp)
            elif plan.metrics or plan.dimensions:
                q = (plan.model or semantic).compile(metrics=plan.metrics, dimensions=plan.dimensions, filters=plan.filters,
                                     time_range=plan.time_range, time_dimension=plan.time_dimension,
                                     order_by=plan.order_by, limit=plan.limit)
                attempts.append(("semantic", q.sql, 0.0))
                out["warnings"] = q.warnings
        except UserError as exc:
            out["error"] = f"semantic layer: {exc}"
    err = None
    for method, sql, _conf in attempts:
        res = _check_and_run(sql, schema, catalog, execute=execute, limit=limit)
        if res.get("error") is None:
            feats = confidence_features(plan, method, bool(out.get("warnings")))
            out.update(res, method=method, confidence=calibrated_confidence(feats), confidence_features=feats)
            return _dbt(out, dbt_dir, dbt_name)
        err = res["error"]
    if llm is not None:
        prev = None
        for attempt in range(1 + repairs):
            try:
                sql = llm_sql(question, schema, llm, few_shot=few_shot, error=err, previous=prev)
            except Exception as exc:  # model unavailable or timed out: report it, no SQL
                out["error"] = f"LLM failed: {exc}"
                return out
            res = _check_and_run(sql, schema, catalog, execute=execute, limit=limit)
            if res.get("error") is None:
                out.update(res, method="llm" if attempt == 0 else f"llm+repair{attempt}",
                           confidence=round(_calibration().get("llm", 0.1) / (1 + attempt), 3))
                return _dbt(out, dbt_dir, dbt_name)
            err, prev = res["error"], sql
            out["sql"] = sql
    out["error"] = err or out["error"] or "the question could not be linked to the semantic model; configure an LLM"
    return out


# ---------------------------------------------------------------------- confidence
CALIBRATION_FILE = Path(__file__).with_name("nl2sql_calibration.json")
FEATURES = ("mean_link", "min_link", "unexplained", "unexplained_share", "composite", "fan_out", "elements")


def confidence_features(plan: Plan, method: str, fan_out: bool) -> list[float]:
    """What the calibrated confidence is computed from (names in FEATURES)."""
    scores = [min(1.0, x) for x in plan.scores] or [0.5]
    content = len(plan.unexplained) + len(plan.metrics) + len(plan.dimensions) + len(plan.filters) + 1
    return [round(float(np.mean(scores)), 4), round(float(min(scores)), 4), float(len(plan.unexplained)),
            round(len(plan.unexplained) / content, 4), float(method != "semantic"), float(fan_out),
            float(len(plan.metrics) + len(plan.dimensions) + len(plan.filters) + bool(plan.time_range))]


_CAL: dict[str, Any] | None = None


def _calibration() -> dict[str, Any]:
    global _CAL
    if _CAL is None:
        import json
        _CAL = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.exists() else {}
    return _CAL


def calibrated_confidence(features: list[float]) -> float:
    """P(answer is right) from a logistic model fitted on labelled questions (benchmarks/nl2sql.py
    --fit-calibration); the plain mean link score when no calibration file is installed."""
    cal = _calibration()
    if not cal.get("coef"):
        return round(features[0], 3)
    z = cal["intercept"] + sum(w * (x - m) / sd for w, x, m, sd in zip(cal["coef"], features, cal["mean"], cal["scale"]))
    return round(1.0 / (1.0 + float(np.exp(-z))), 3)


def _check_and_run(sql: str, schema, catalog, *, execute: bool, limit: int) -> dict[str, Any]:
    try:
        vq = validate_select(sql, schema, limit=limit)
    except SqlValidationError as exc:
        return {"sql": sql, "valid": False, "error": str(exc)}
    res: dict[str, Any] = {"sql": vq.sql, "valid": True, "tables": vq.tables, "columns": vq.columns,
                           "used_columns": sorted({f"{t}.{c}" for t, c, _ in column_lineage(vq, schema)}), "error": None}
    if execute:
        try:
            data = run_select(vq, _read_tables(catalog, vq.tables))
        except SqlValidationError as exc:
            return {**res, "valid": False, "error": str(exc)}
        res["rows"] = data.to_pylist()
        res["columns"] = data.column_names
    return res


def _dbt(out: dict[str, Any], dbt_dir, name) -> dict[str, Any]:
    if dbt_dir is not None and out.get("valid"):
        out["dbt"] = write_dbt_model(out, dbt_dir, name=name)
    return out


_JINJA = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")


def _inert_text(text: str) -> str:
    """Text safe inside a SQL line comment and a dbt description: one line, no Jinja delimiters."""
    text = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", text)
    return _JINJA.sub(lambda m: m.group(0)[0] + " " + m.group(0)[1], text)[:500]


def write_dbt_model(ans: dict[str, Any], folder: str | Path, *, name: str | None = None) -> dict[str, str]:
    """Write an answer as a dbt model: models/<name>.sql (tables as sources) and models/schema.yml."""
    import sqlglot
    import yaml
    from sqlglot import exp

    name = name or re.sub(r"[^a-z0-9]+", "_", ans["question"].lower()).strip("_")[:60] or "answer"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,80}", name):
        raise UserError(f"dbt model name {name!r} must be letters, digits and _")
    if _JINJA.search(ans["sql"]):
        raise UserError("the query holds '{{', '{%' or '{#' in a literal, which dbt would render as Jinja; "
                        "not written as a dbt model")
    question = _inert_text(ans["question"])
    models = Path(folder) / "models"
    models.mkdir(parents=True, exist_ok=True)
    tree = sqlglot.parse_one(ans["sql"], read="duckdb")
    for t in tree.find_all(exp.Table):
        if t.db:
            alias = t.alias_or_name
            t.replace(exp.Table(this=exp.to_identifier(f"{{{{ source('{t.db}', '{t.name}') }}}}", quoted=False),
                                alias=exp.TableAlias(this=exp.to_identifier(alias))))
    sql_path = models / f"{name}.sql"
    sql_path.write_text(f"-- {question}\n-- generated by eai-ray NL-to-SQL (confidence {ans['confidence']})\n"
                        + tree.sql(dialect="duckdb", pretty=True) + "\n")
    schema_path = models / "schema.yml"
    doc = yaml.safe_load(schema_path.read_text()) if schema_path.exists() else None
    doc = doc or {"version": 2, "models": [], "sources": []}
    doc["models"] = [m for m in doc.get("models", []) if m.get("name") != name] + [{
        "name": name, "description": question,
        "columns": [{"name": c} for c in ans.get("columns", [])]}]
    srcs = {s["name"]: s for s in doc.get("sources", [])}
    for t in ans.get("tables", []):
        ns, tname = t.split(".", 1)
        s = srcs.setdefault(ns, {"name": ns, "tables": []})
        if not any(x["name"] == tname for x in s["tables"]):
            s["tables"].append({"name": tname})
    doc["sources"] = list(srcs.values())
    schema_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"sql": str(sql_path), "schema": str(schema_path)}
