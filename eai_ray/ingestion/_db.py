"""Helpers the SQL connectors share: batch sizing, cursor-safe checkpoints, key-range plans.

Kept private: each connector module stays the one public place for its source.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.errors import SourceNotFound
from eai_ray.ingestion.base import Batch, Partition, cursor_value

LARGE_TABLE_ROWS = 100_000  # above this, plan() gives every worker at least one partition


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


class TableResources:
    """What the database connectors share: their configured tables are their resources.

    Subclasses set ``self.source`` (with ``tables`` and ``kind``) and ``self.name``.
    """

    source: Any
    name: str

    def resources(self) -> list[str]:
        """Configured table names."""
        return [t.name for t in self.source.tables]

    def _table(self, resource: str):
        for t in self.source.tables:
            if t.name == resource:
                return t
        raise SourceNotFound(f"{self.source.kind} source '{self.name}' has no resource '{resource}'",
                             source=self.name, resource=resource)


class CatalogDiscovery(TableResources):
    """Discovery from the server's catalog: a table's own metadata, or a query's result columns.

    Subclasses provide ``_cursor(resource)``, ``_discover_table(cur, table)`` and
    ``_discover_query(cur, table)``.
    """

    def discover(self, resource: str):
        """Columns, types, nullability and primary key of one table or query."""
        table = self._table(resource)
        with self._cursor(resource) as cur:
            if table.query:
                return self._discover_query(cur, table)
            return self._discover_table(cur, table)
