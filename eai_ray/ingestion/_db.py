"""Helpers the SQL connectors share: batch sizing, cursor-safe checkpoints, key-range plans,
wildcard table lists, and the per-value guard for values outside their Arrow type.

Kept private: each connector module stays the one public place for its source.

Values outside their type (the meta-column contract)
----------------------------------------------------
A column whose source values may not fit its Arrow type (PostgreSQL ``infinity`` or BC
timestamps, ``time '24:00'``, numeric ``NaN``; MariaDB zero dates, ``TIME`` past 24 h) gets a
``Guard``: engine SQL that spots such a value and what replaces it. A read of a table with at
least one guarded column adds two string columns, null for good rows:

- ``_eai_raw``: a JSON object ``{"<column>": "<server text of the value>", ...}`` of the
  offending values of that row;
- ``_eai_error``: ``type:<column>: value '<text>' is outside the range of <type>
  (on_out_of_range: quarantine)`` (``; ``-joined when several columns of one row are out of
  range), only under ``on_out_of_range: quarantine``; silver quarantines the row under the rule
  ``type:<column>``.

The value itself becomes NULL (``quarantine``, ``null``) or the nearest end of the range
(``clamp``; values that are no point of the range at all, such as ``NaN`` or a MariaDB zero
date, become NULL). A table with no guarded column gets neither column: its reads stay as
they were.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.config import WILDCARD, DbTable, expand_tables, has_wildcard
from eai_ray.errors import SourceNotFound
from eai_ray.ingestion.base import ERROR_COLUMN, RAW_COLUMN, Batch, DiscoveredSchema, Partition, cursor_value

LARGE_TABLE_ROWS = 100_000  # above this, plan() gives every worker at least one partition
EAI_OBJECT_PREFIX = "_eai_"  # tables and views eai itself may keep in a source; never part of '*'
MIN_TIMESTAMP = "0001-01-01 00:00:00"  # the range every engine's datetime (and Iceberg readers) can hold
MAX_TIMESTAMP = "9999-12-31 23:59:59.999999"
MIN_DATE, MAX_DATE = "0001-01-01", "9999-12-31"
MAX_TIME = "23:59:59.999999"


def rebatch(pieces: Iterable[pa.RecordBatch | pa.Table], batch_rows: int,
            cursor: str | None = None) -> Iterator[Batch]:
    """Regroup Arrow pieces into Batches of about ``batch_rows`` rows.

    With a cursor the rows must arrive sorted by it; a batch then never ends
    between two rows holding the same cursor value, so resuming from its
    checkpoint (``cursor > max``) cannot skip the tied rows of the next batch.
    """
    pending: list[pa.Table] = []
    size = 0
    for piece in pieces:
        if piece.num_rows == 0:
            continue
        pending.append(pa.Table.from_batches([piece]) if isinstance(piece, pa.RecordBatch) else piece)
        size += piece.num_rows
        while size > batch_rows:  # keep one row of look-ahead to see where a cursor value ends
            table = pa.concat_tables(pending)
            cut = _cut_point(table, batch_rows, cursor)
            if cut is None:  # all rows share one cursor value: wait for a change
                pending = [table]
                break
            head, tail = table.slice(0, cut), table.slice(cut)
            yield _batch(head, cursor)
            pending, size = [tail], tail.num_rows
    if size:
        yield _batch(pa.concat_tables(pending), cursor)


def _batch(table: pa.Table, cursor: str | None) -> Batch:
    table = table.combine_chunks()
    value = cursor_value(table, cursor) if cursor else None
    return Batch(table, {"cursor": value} if value is not None else None)


def _cut_point(table: pa.Table, target: int, cursor: str | None) -> int | None:
    """Row count for the next batch (the table holds more than ``target`` rows): ``target``,
    moved to a cursor-value boundary; None = every row shares one value, read on."""
    if cursor is None:
        return target
    col = table.column(cursor).combine_chunks()
    last = col[target - 1]
    if _ne(col[target], last):
        return target
    before = pc.indices_nonzero(_differs(col.slice(0, target), last))
    if len(before):
        return before[-1].as_py() + 1
    after = pc.indices_nonzero(_differs(col.slice(target), last))
    return target + after[0].as_py() if len(after) else None


def _ne(a: pa.Scalar, b: pa.Scalar) -> bool:
    if a.is_valid != b.is_valid:
        return True
    return a.is_valid and a.as_py() != b.as_py()


def _differs(col: pa.Array, value: pa.Scalar) -> pa.Array:
    if not value.is_valid:
        return pc.is_valid(col)
    return pc.fill_null(pc.not_equal(col, value), True)


def partition_count(*, explicit: int, row_estimate: int | None, span: int,
                    parallelism: int, batch_rows: int) -> int:
    """How many key ranges to read: ``explicit`` if set, else one per batch, at least one per worker when large."""
    if explicit:
        return max(1, min(explicit, span))
    rows = row_estimate if row_estimate is not None and row_estimate >= 0 else span
    n = math.ceil(rows / batch_rows)
    if rows > LARGE_TABLE_ROWS:
        n = max(n, parallelism)
    return max(1, min(n, span))


def key_ranges(resource: str, column: str, lo: int, hi: int, n: int) -> list[Partition]:
    """Split [lo, hi] into ``n`` ranges; the first is open below (and takes NULLs), the last open above."""
    if n <= 1:
        return []
    step = math.ceil((hi - lo + 1) / n)
    bounds = [lo + i * step for i in range(1, n) if lo + i * step <= hi]
    edges: list[Any] = [None, *bounds, None]
    parts = []
    for a, b in zip(edges, edges[1:]):
        label = f"{column}[{'' if a is None else a},{'' if b is None else b})"
        parts.append(Partition(resource, label, {"column": column, "lo": a, "hi": b}))
    return parts if len(parts) > 1 else []


def scrub(text: str, *secrets: str | None) -> str:
    """Remove secret values from text that came from a driver before it reaches an error."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def first_line(exc: BaseException) -> str:
    """The driver's message without its multi-line detail/context noise."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------- values outside their type
@dataclass(frozen=True)
class Guard:
    """How one column's values that do not fit its Arrow type are spotted and replaced (engine SQL).

    ``cases`` pairs a condition that is true for a misfit value (NULL never is) with the value
    ``clamp`` puts in its place; the first true condition wins.
    """

    column: str
    target: str  # what the values must fit, for the error text: "timestamp [0001-01-01 ...]"
    cases: tuple[tuple[str, str], ...]
    raw: str  # SQL of the value as the server's text

    @property
    def bad(self) -> str:
        return " OR ".join(f"({cond})" for cond, _ in self.cases)

    def value(self, expr: str, policy: str) -> str:
        """SQL of the column's value: ``expr`` where it fits, else NULL or its clamped value."""
        if policy == "clamp":
            whens = " ".join(f"WHEN {cond} THEN {repl}" for cond, repl in self.cases)
            return f"CASE {whens} ELSE {expr} END"
        return f"CASE WHEN {self.bad} THEN NULL ELSE {expr} END"


def any_bad(guards: list[Guard]) -> str:
    """SQL: true when at least one guarded value of the row does not fit."""
    return " OR ".join(f"({g.bad})" for g in guards)


def raw_json(guards: list[Guard], *, literal: Callable[[str], str], to_json: Callable[[str], str],
             concat: Callable[..., str]) -> str:
    """SQL of the ``_eai_raw`` value: a JSON object of the row's misfit values as text, else NULL.

    ``literal(text)`` quotes a string constant, ``to_json(sql)`` makes a JSON string of a text
    expression and ``concat(*sql)`` joins texts, in the engine's SQL. Built by concatenation, not
    a JSON function: PostgreSQL functions take at most 100 arguments, fewer than wide tables need.
    """
    pieces = [f"CASE WHEN {g.bad} THEN "
              f"{concat(literal(',' + json.dumps(g.column, ensure_ascii=False) + ':'), to_json(g.raw))} "
              f"ELSE '' END" for g in guards]
    body = f"substr({concat(*pieces)}, 2)"  # drops the first piece's leading comma
    return f"CASE WHEN {any_bad(guards)} THEN {concat(literal('{'), body, literal('}'))} END"


def error_text(column: str, raw: str, target: str) -> str:
    """The ``_eai_error`` text for one value; silver reads the rule name from its ``type:<column>:`` prefix."""
    return f"type:{column}: value '{raw}' is outside the range of {target} (on_out_of_range: quarantine)"


@dataclass(frozen=True)
class MetaPlan:
    """How a read turns its selected columns into the final batch (``finish_batch``).

    ``nan_columns``: selected text columns (by position) whose ``'NaN'`` is found here, not in
    SQL (a numeric comparison per row costs the server far more than a text compare costs
    Arrow), then cast to their decimal type. ``server_raw``: the selection ends with the
    ``_eai_raw`` the SQL guards built.
    """

    targets: dict[str, str]  # guarded column -> the range its values must fit
    policy: str
    schema: pa.Schema  # the final batch schema, ending with _eai_raw and _eai_error
    nan_columns: dict[int, pa.DataType] = field(default_factory=dict)
    server_raw: bool = True


def finish_batch(batch: pa.RecordBatch, meta: MetaPlan,
                 cast: Callable[[pa.Array, pa.Field], pa.Array]) -> pa.RecordBatch:
    """Flag ``NaN`` text, cast, and append ``_eai_raw``/``_eai_error``; only flagged rows cost Python work.

    ``cast(column, field)`` converts a selected column to its final field (the connector's, so a
    failure names its table and column).
    """
    cols = list(batch.columns)
    found: dict[int, dict[str, str]] = {}  # row -> {column: raw text} found here
    for i in meta.nan_columns:
        col = cols[i]
        # match_substring: no number's text holds 'NaN', and unlike a comparison with a Python
        # constant it does not make pyarrow import pandas on the hot path
        if col.null_count < len(col) and pc.any(pc.match_substring(col, "NaN")).as_py():
            nan = pc.fill_null(pc.equal(col, "NaN"), False)
            if pc.any(nan).as_py():
                name = meta.schema.field(i).name
                for row in pc.indices_nonzero(nan).to_pylist():
                    found.setdefault(row, {})[name] = "NaN"
                col = pc.if_else(nan, pa.scalar(None, col.type), col)
        cols[i] = col
    raw = cols.pop() if meta.server_raw else pa.nulls(batch.num_rows, pa.string())
    cols = [c if c.type.equals(f.type) else cast(c, f) for c, f in zip(cols, meta.schema)]
    if found:
        raw = _merge_raw(raw, found, meta.schema.names)
    errors = pa.nulls(batch.num_rows, pa.string())
    if meta.policy == "quarantine" and raw.null_count < len(raw):
        flagged = pc.is_valid(raw)
        texts = ["; ".join(error_text(c, v, meta.targets.get(c, "its type")) for c, v in json.loads(t).items())
                 for t in raw.filter(flagged).to_pylist()]
        errors = pc.replace_with_mask(errors, flagged, pa.array(texts, pa.string()))
    return pa.RecordBatch.from_arrays([*cols, raw, errors], schema=meta.schema)


def first_failure(col: pa.Array, typ: pa.DataType, limit: int = 100_000) -> str | None:
    """The first value of ``col`` that does not cast to ``typ`` (for an error message; slow, error path only)."""
    for v in col.slice(0, limit).to_pylist():
        if v is None:
            continue
        try:
            pa.array([v], col.type).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
            return str(v)
    return None


def _merge_raw(raw: pa.Array, found: dict[int, dict[str, str]], order: list[str]) -> pa.Array:
    """Add the values flagged in Arrow to the rows' ``_eai_raw`` objects, keys in column order."""
    position = {name: i for i, name in enumerate(order)}
    values = raw.to_pylist()
    for row, extra in found.items():
        merged = {**(json.loads(values[row]) if values[row] else {}), **extra}
        values[row] = json.dumps(dict(sorted(merged.items(), key=lambda kv: position.get(kv[0], 0))),
                                 ensure_ascii=False, separators=(",", ":"))
    return pa.array(values, pa.string())


@dataclass
class DbSchema(DiscoveredSchema):
    """A database resource's schema, plus what its reads add.

    ``arrow_schema()`` (the schema of every batch ``read`` yields) ends with the meta columns
    ``_eai_raw`` and ``_eai_error`` when some column is guarded; ``columns`` lists the source's
    own columns only. ``warnings`` maps a column to why it was read in a weaker type than asked
    (a ``numeric`` whose values cannot fit a decimal): worth showing in a run summary.
    """

    guarded: dict[str, str] = field(default_factory=dict)  # column -> the range its values must fit
    on_out_of_range: str = "quarantine"
    warnings: dict[str, str] = field(default_factory=dict)

    def meta_fields(self) -> list[pa.Field]:
        if not self.guarded:
            return []
        return [pa.field(RAW_COLUMN, pa.string()), pa.field(ERROR_COLUMN, pa.string())]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(list(super().arrow_schema()) + self.meta_fields())

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.guarded:
            out.update(guarded=self.guarded, on_out_of_range=self.on_out_of_range,
                       meta_columns=[f.name for f in self.meta_fields()])
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def policy_of(source: Any, table: DbTable) -> str:
    """The table's ``on_out_of_range``, else the source's (default quarantine)."""
    return table.on_out_of_range or getattr(source, "on_out_of_range", None) or "quarantine"


def choose_key(candidates: Iterable[tuple[str, bool, bool, list[str]]]) -> tuple[list[str], str]:
    """The key a table's rows are identified by, and where it came from.

    ``candidates``: (index name, is primary, every column NOT NULL (or NULLs not distinct),
    columns) of the table's primary key and full (non-partial, non-expression) unique indexes.
    The primary key wins; else the unique index over NOT NULL columns with the fewest columns
    (then by name). A unique index over nullable columns is no key: several rows may hold NULL.
    """
    best: tuple[int, str, list[str]] | None = None
    for name, primary, not_null, cols in candidates:
        if primary:
            return list(cols), f"primary key {name}"
        if not_null and cols and (best is None or (len(cols), name) < best[:2]):
            best = (len(cols), name, list(cols))
    if best is None:
        return [], "no primary key or unique index over NOT NULL columns"
    return best[2], f"unique index {best[1]} (no primary key)"


# ---------------------------------------------------------------------- tables and wildcards
def listed(names: Iterable[str], exclude: list[str]) -> list[str]:
    """Table names a wildcard stands for: sorted, without eai's own objects and ``exclude`` matches."""
    return sorted(n for n in set(names)
                  if not n.startswith(EAI_OBJECT_PREFIX) and not any(fnmatchcase(n, p) for p in exclude))


class TableResources:
    """What the database connectors share: their configured tables are their resources.

    Subclasses set ``self.source`` (with ``tables`` and ``kind``) and ``self.name``, and
    implement ``list_tables()``; a ``"*"`` entry then stands for the tables it lists.
    """

    source: Any
    name: str

    def list_tables(self) -> list[str]:  # pragma: no cover - every connector overrides it
        raise NotImplementedError

    def resources(self) -> list[str]:
        """Configured table names; a ``"*"`` entry is listed from the catalog (one query)."""
        if has_wildcard(self.source):
            return [t.name for t in expand_tables(self.source, self.list_tables()).tables]
        return [t.name for t in self.source.tables]

    def _table(self, resource: str) -> DbTable:
        for t in self.source.tables:
            if t.name == resource and not t.is_wildcard:
                return t
        if resource != WILDCARD and has_wildcard(self.source) and resource in self.list_tables():
            # a source used before expand_tables: a table the wildcard covers reads with defaults
            return next(t for t in expand_tables(self.source, [resource]).tables if t.name == resource)
        known = [t.name for t in self.source.tables]
        raise SourceNotFound(f"{self.source.kind} source '{self.name}' has no resource '{resource}' (fix: add it "
                             f"to the source's 'tables', or list '*'; configured: {', '.join(known)})",
                             source=self.name, resource=resource)


class CatalogDiscovery(TableResources):
    """Discovery from the server's catalog: a table's own metadata, or a query's result columns.

    Subclasses provide ``_cursor(resource)``, ``_discover_table(cur, table)`` and
    ``_discover_query(cur, table)``.
    """

    def _cursor(self, resource: str | None = None) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _discover_table(self, cur: Any, table: DbTable) -> DiscoveredSchema:
        raise NotImplementedError

    def _discover_query(self, cur: Any, table: DbTable) -> DiscoveredSchema:
        raise NotImplementedError

    def discover(self, resource: str):
        """Columns, types, nullability and primary key of one table or query."""
        table = self._table(resource)
        with self._cursor(resource) as cur:
            if table.query:
                return self._discover_query(cur, table)
            return self._discover_table(cur, table)
