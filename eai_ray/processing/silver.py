"""Bronze -> silver: type coercion, quality gates, quarantine and dedup, as one pure function.

Nothing is dropped silently: every input row ends in exactly one of
``good`` (goes to the silver merge), ``quarantine`` (with the rule and the reason)
or the count of in-batch duplicates (an older version of a key in the same batch).

Example::

    result = transform(bronze_batch, spec, source_types={"id": pa.int64()})
    result.good, result.quarantine, result.duplicates
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.config import Rule, SilverTable
from eai_ray.errors import QualityGateFailed, SqlValidationError
from eai_ray.storage.dedup import latest_per_key
from eai_ray.types import ERROR_COLUMN, arrow_type

META_PREFIX = "_eai_"
QUARANTINE_SCHEMA = pa.schema([
    pa.field("_eai_run_id", pa.string()),
    pa.field("_eai_source", pa.string()),
    pa.field("_eai_rule", pa.string()),
    pa.field("_eai_reason", pa.string()),
    pa.field("_eai_record", pa.string()),
    pa.field("_eai_position", pa.string()),
    pa.field("_eai_quarantined_at", pa.timestamp("us", tz="UTC")),
])


@dataclass
class RuleOutcome:
    rule: str
    check: str
    action: str
    column: str | None
    failed: int
    evaluated: int

    @property
    def pass_rate(self) -> float:
        return 1.0 if self.evaluated == 0 else 1 - self.failed / self.evaluated


@dataclass
class SilverResult:
    good: pa.Table
    quarantine: pa.Table
    duplicates: int
    rules: list[RuleOutcome] = field(default_factory=list)
    column_map: dict[str, str] = field(default_factory=dict)  # silver column -> source column

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows


def target_columns(spec: SilverTable, source_types: dict[str, pa.DataType]) -> dict[str, tuple[str, pa.DataType, bool]]:
    """silver column -> (source column, Arrow type, nullable): declared, else as discovered.

    Discovered names that collide once case is ignored (``Total`` and ``total``: Iceberg keeps
    both, DuckDB and most SQL engines do not) get a deterministic suffix, see ``silver_names``.
    """
    if spec.columns:
        return {name: (c.source or name, arrow_type(c.type), c.nullable) for name, c in spec.columns.items()}
    names = silver_names([n for n in source_types if not n.startswith(META_PREFIX)])
    return {dst: (src, source_types[src], src not in spec.primary_key) for src, dst in names.items()}


def silver_names(columns: list[str]) -> dict[str, str]:
    """Source column -> silver column, unique without regard to case.

    The first column of a case-insensitive group keeps its name; each later one gets ``__2``,
    ``__3``... (the lowest suffix free in any case), in source column order, so the same source
    always gives the same names. Example::

        silver_names(["Total", "total", "id"])  # {'Total': 'Total', 'total': 'total__2', 'id': 'id'}
    """
    used = {c.casefold() for c in columns}
    first: set[str] = set()
    out: dict[str, str] = {}
    for c in columns:
        key = c.casefold()
        if key not in first:
            first.add(key)
            out[c] = c
            continue
        i = 2
        while f"{c}__{i}".casefold() in used:
            i += 1
        out[c] = f"{c}__{i}"
        used.add(out[c].casefold())
    return out


def renamed_columns(spec: SilverTable, source_types: dict[str, pa.DataType]) -> dict[str, str]:
    """The discovered columns that silver stores under another name (source -> silver)."""
    if spec.columns:
        return {}
    return {src: dst for dst, (src, _, _) in target_columns(spec, source_types).items() if src != dst}


def _coerce(arr: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """(values, failed mask): failed = a non-null input that could not become `target`."""
    from eai_ray.coerce import coerce_column

    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.type.equals(target):
        return arr, pa.array(np.zeros(len(arr), dtype=bool))
    return coerce_column(arr, target)


def _record_json(bronze: pa.Table) -> pa.Array:
    """Each (rejected) row as text: the raw record when the connector kept it, else the typed columns.

    A database connector keeps only the values it could not type, as a JSON object; those are laid
    over the typed row, so the record shows the whole row with the source's own text where it matters.
    """
    import json

    typed = _typed_json(bronze)
    if "_eai_raw" not in bronze.column_names:
        return typed
    raw = bronze.column("_eai_raw").combine_chunks().cast(pa.string())
    if raw.null_count == len(raw):
        return typed
    out = []
    for r, t in zip(raw.to_pylist(), typed.to_pylist()):
        if r is None:
            out.append(t)
            continue
        try:
            partial = json.loads(r) if r.startswith("{") else None
            whole = json.loads(t) if t else None
        except ValueError:
            partial = whole = None
        if isinstance(partial, dict) and isinstance(whole, dict) and set(partial) <= set(whole):
            out.append(json.dumps({**whole, **partial}, ensure_ascii=False))
        else:
            out.append(r)
    return pa.array(out, pa.string())


def _typed_json(bronze: pa.Table) -> pa.Array:
    cols = [c for c in bronze.column_names if not c.startswith(META_PREFIX)]
    if not cols:
        return pa.nulls(bronze.num_rows, pa.string())
    df = pl.from_arrow(bronze.select(cols))
    if not isinstance(df, pl.DataFrame):
        df = df.to_frame()
    out = df.select(pl.struct(pl.all()).struct.json_encode().alias("j")).get_column("j").to_arrow()
    return out.cast(pa.string())


def _to_text(arr: pa.Array) -> pa.Array:
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())


def _reason(prefix: str, values: pa.Array | None, suffix: str, n: int) -> pa.Array:
    if values is None:
        return pa.array([prefix + suffix] * n, pa.string()) if n else pa.array([], pa.string())
    text = pc.utf8_slice_codeunits(pc.fill_null(_to_text(values), "null"), 0, 200)
    return pc.binary_join_element_wise(pa.scalar(prefix), text, pa.scalar(suffix), "")


def _rule_mask(rule: Rule, table: pa.Table, references: dict[str, pa.Array]) -> pa.Array:
    """True where the row violates the rule. Nulls pass every check except not_null."""
    check = rule.check
    if check == "expression":
        assert rule.expression is not None  # Rule.check names the field that is set
        return _expression_mask(rule.expression, table)
    col = table.column(rule.column).combine_chunks()
    if check == "not_null":
        return pc.is_null(col)
    if check == "regex":
        ok = pc.match_substring_regex(_to_text(col), rule.regex)
    elif check == "range":
        try:
            num = col if pa.types.is_floating(col.type) else pc.cast(col, pa.float64())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            raise SqlValidationError(f"rule '{rule.name}': min/max need a numeric column, "
                                     f"'{rule.column}' is {col.type}") from None
        ok = pa.array(np.ones(len(col), dtype=bool))
        if rule.min is not None:
            ok = pc.and_(ok, pc.greater_equal(num, rule.min))
        if rule.max is not None:
            ok = pc.and_(ok, pc.less_equal(num, rule.max))
    elif check == "accepted_values":
        assert rule.accepted_values is not None  # Rule.check names the field that is set
        ok = pc.is_in(_to_text(col), value_set=pa.array([str(v) for v in rule.accepted_values]))
    elif check == "references":
        assert rule.references is not None  # Rule.check names the field that is set
        ref = references.get(rule.references)
        if ref is None:
            return pa.array(np.zeros(len(col), dtype=bool))  # referenced table not built yet: checked next run
        ok = pc.is_in(_to_text(col), value_set=_to_text(ref).unique())
    else:  # pragma: no cover - config validation prevents it
        raise ValueError(check)
    return pc.and_(pc.invert(pc.fill_null(ok, True)), pc.is_valid(col))


_FORBIDDEN_EXPR = re.compile(r";|\b(select|insert|update|delete|drop|create|alter|attach|copy|pragma|install|load)\b", re.I)


def _expression_mask(expression: str, table: pa.Table) -> pa.Array:
    """Evaluate a SQL boolean expression row by row (CHECK semantics: only FALSE fails), through the
    same validator and sandbox as every query (no statements, no file access, bounded)."""
    from eai_ray.processing.sql import evaluate_over

    if _FORBIDDEN_EXPR.search(expression):
        raise SqlValidationError(f"rule expression must be a plain boolean expression: {expression!r}")
    try:
        res = evaluate_over(table, f"coalesce(NOT ({expression}), false) AS bad")
    except SqlValidationError as exc:
        raise SqlValidationError(f"rule expression {expression!r}: {exc}") from None
    col = res.column("bad")
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def transform(bronze: pa.Table, spec: SilverTable, *, source_types: dict[str, pa.DataType],
              run_id: str = "", source: str = "", references: dict[str, pa.Array] | None = None,
              now: dt.datetime | None = None) -> SilverResult:
    """Coerce, validate, quarantine and dedup one bronze batch for one silver table."""
    references = references or {}
    now = now or dt.datetime.now(dt.timezone.utc)
    n = bronze.num_rows
    targets = target_columns(spec, source_types)

    # 1. coercion: one column at a time, failures remembered per row
    cols, reason, rule_name = {}, pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    outcomes: list[RuleOutcome] = []
    bad = pa.array([False] * n, pa.bool_())
    if ERROR_COLUMN in bronze.column_names:
        errors = bronze.column(ERROR_COLUMN).combine_chunks().cast(pa.string())
        perr = pc.is_valid(errors)
        reason = pc.if_else(perr, errors, reason)
        rule_name = pc.if_else(perr, _connector_rule(errors), rule_name)
        bad = pc.or_(bad, perr)
        outcomes.append(RuleOutcome("parse", "parse", "quarantine", None, pc.sum(perr).as_py() or 0, n))
    for name, (src, typ, _nullable) in targets.items():
        if src not in bronze.column_names:
            cols[name] = pa.nulls(n, typ)
            continue
        raw = bronze.column(src)
        values, failed = _coerce(raw, typ)
        cols[name] = values
        nfail = pc.sum(failed).as_py() or 0
        outcomes.append(RuleOutcome(f"type:{name}", "type", "quarantine", name, nfail, n))
        if nfail:
            new_reason = _reason(f"column '{name}': value '", raw.combine_chunks(), f"' is not a valid {typ}", n)
            first = pc.and_(failed, pc.invert(bad))
            reason = pc.if_else(first, new_reason, reason)
            rule_name = pc.if_else(first, pa.scalar(f"type:{name}"), rule_name)
            bad = pc.or_(bad, failed)
    typed = pa.table(cols) if cols else pa.table({})

    # 2. declared NOT NULL columns and primary keys, then the configured rules
    rules: list[Rule] = [Rule(name=f"{c}_not_null", column=c, not_null=True, action="quarantine")
                         for c, (_, _, nullable) in targets.items() if not nullable or c in spec.primary_key]
    rules += list(spec.rules)
    fail_rules = []
    for rule in rules:
        if rule.column and rule.column not in typed.column_names:
            raise SqlValidationError(f"rule '{rule.name}' names unknown column '{rule.column}' of silver table "
                                     f"{spec.name}; columns: {typed.column_names}")
        mask = pc.fill_null(_rule_mask(rule, typed, references), False)
        nfail = pc.sum(mask).as_py() or 0
        assert rule.name is not None  # Rule's validator names every rule
        outcomes.append(RuleOutcome(rule.name, rule.check, rule.action, rule.column, nfail, n))
        if not nfail or rule.action == "warn":
            continue
        if rule.action == "fail":
            fail_rules.append((rule, nfail))
            continue
        vals = typed.column(rule.column).combine_chunks() if rule.column else None
        desc = _describe(rule)
        new_reason = _reason(f"rule '{rule.name}' ({desc}): value '" if vals is not None else f"rule '{rule.name}' ({desc})",
                             vals, "'" if vals is not None else "", n)
        first = pc.and_(mask, pc.invert(bad))
        reason = pc.if_else(first, new_reason, reason)
        rule_name = pc.if_else(first, pa.scalar(rule.name), rule_name)
        bad = pc.or_(bad, mask)
    if fail_rules:
        rule, nfail = fail_rules[0]
        raise QualityGateFailed(f"quality gate '{rule.name}' on {spec.name} failed for {nfail} of {n} rows "
                                f"({_describe(rule)})", table=spec.name, rule=rule.name, failed=nfail)

    # 3. split good / quarantine
    good_mask = pc.invert(bad)
    good = typed.filter(good_mask)
    qidx = pc.indices_nonzero(bad)
    m = len(qidx)
    # only the rejected rows are written out as JSON (most batches have none)
    record = _record_json(bronze.take(qidx)) if m else pa.array([], pa.string())
    position = (bronze.column("_eai_position").combine_chunks().cast(pa.string())
                if "_eai_position" in bronze.column_names else pa.nulls(n, pa.string()))
    quarantine = pa.table({
        "_eai_run_id": pa.array([run_id] * m, pa.string()),
        "_eai_source": pa.array([source] * m, pa.string()),
        "_eai_rule": rule_name.take(qidx),
        "_eai_reason": reason.take(qidx),
        "_eai_record": record,
        "_eai_position": position.take(qidx),
        "_eai_quarantined_at": pa.array([now] * m, pa.timestamp("us", tz="UTC")),
    }, schema=QUARANTINE_SCHEMA)

    # 4. dedup inside the batch: latest version of each key wins
    duplicates = 0
    if spec.primary_key and good.num_rows:
        before = good.num_rows
        good = latest_per_key(cast(pl.DataFrame, pl.from_arrow(good)), spec.primary_key, spec.sequence_by).to_arrow()
        duplicates = before - good.num_rows
    return SilverResult(good=good, quarantine=quarantine, duplicates=duplicates, rules=outcomes,
                        column_map={name: src for name, (src, _, _) in targets.items()})


def _connector_rule(errors: pa.Array) -> pa.Array:
    """Rule name of a connector's row error: ``type:<column>`` when the text starts so (a value the
    target type cannot hold, e.g. a PostgreSQL ``infinity`` timestamp), else ``parse``."""
    typed = pc.struct_field(pc.extract_regex(errors, r"^(?P<rule>type:.+?): "), "rule")
    return pc.coalesce(typed, pa.scalar("parse"))


def _describe(rule: Rule) -> str:
    c = rule.check
    if c == "regex":
        return f"must match {rule.regex}"
    if c == "range":
        lo = "" if rule.min is None else f">= {rule.min}"
        hi = "" if rule.max is None else f"<= {rule.max}"
        return "must be " + " and ".join(x for x in (lo, hi) if x)
    if c == "accepted_values":
        return f"must be one of {rule.accepted_values}"
    if c == "expression":
        return f"must satisfy {rule.expression}"
    if c == "references":
        return f"must exist in {rule.references}"
    return "must not be null"
