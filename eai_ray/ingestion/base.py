"""The connector contract: one small Protocol plus optional capabilities.

A connector is built from its source config (``eai_ray.config``), opens its
connections lazily and yields Arrow tables; no Python object per row on the
database hot path. Every connector passes ``tests/integration/test_connector_contract.py``.

Capabilities are separate Protocols (``SupportsPartitioning``) checked with
``isinstance``; incremental extraction is part of ``read``: pass the last
committed checkpoint and get only what came after it.

Checkpoints are JSON-able dicts that the batch puller commits in the same
Iceberg snapshot as the data they cover:
- databases and REST: ``{"cursor": <last value>}``
- files: ``{"files": {"<path>": {"mtime": .., "size": .., "fingerprint": ..}}}`` (a bare mtime in old ones)
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from eai_ray.types import ERROR_COLUMN, POSITION_COLUMN, RAW_COLUMN  # noqa: F401 - connectors' vocabulary


@dataclass
class ColumnInfo:
    """One discovered column: its Arrow type, how sure we are, and why."""

    name: str
    type: pa.DataType
    nullable: bool = True
    confidence: float = 1.0  # share of sampled non-null values that parsed as `type`
    evidence: str = "declared by the source catalog"
    primary_key: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": str(self.type), "nullable": self.nullable,
                "confidence": round(self.confidence, 4), "evidence": self.evidence,
                "primary_key": self.primary_key}


@dataclass
class DiscoveredSchema:
    resource: str
    columns: list[ColumnInfo]
    primary_key: list[str] = field(default_factory=list)
    row_estimate: int | None = None
    # how the source was read when that was sniffed (files: encoding, delimiter, ... with confidence and evidence)
    format_info: dict[str, Any] | None = None

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, c.nullable) for c in self.columns])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": self.resource, "primary_key": self.primary_key,
               "row_estimate": self.row_estimate, "columns": [c.to_dict() for c in self.columns]}
        if self.format_info is not None:
            out["format_info"] = self.format_info
        return out


@dataclass
class Partition:
    """A slice of a resource that one Ray task reads on its own."""

    resource: str
    label: str  # shown in progress and stored as the source position
    predicate: dict[str, Any] | None = None  # connector-specific, e.g. {"column": "id", "lo": 1, "hi": 5000}


@dataclass
class Batch:
    """One extracted chunk and the checkpoint that is safe once it is committed."""

    table: pa.Table
    checkpoint: dict[str, Any] | None = None


@runtime_checkable
class Connector(Protocol):
    kind: str
    name: str

    def check(self) -> None:
        """Open a connection and run a trivial request; raise a typed EaiError on failure."""

    def resources(self) -> list[str]:
        """Names of the configured resources (tables, file groups, endpoints)."""

    def discover(self, resource: str) -> DiscoveredSchema:
        """Column names, types, nullability and primary key of one resource."""

    def read(self, resource: str, *, checkpoint: dict[str, Any] | None = None,
             partition: Partition | None = None, batch_rows: int = 250_000) -> Iterator[Batch]:
        """Yield Arrow batches after `checkpoint` (None = from the start)."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class SupportsPartitioning(Protocol):
    def plan(self, resource: str, *, checkpoint: dict[str, Any] | None, parallelism: int,
             batch_rows: int) -> list[Partition]:
        """Split a resource into independent partitions (key ranges); [] = read it whole."""


def merge_checkpoints(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Combine checkpoints of two batches: cursors take the max, file maps are united."""
    if not a:
        return b
    if not b:
        return a
    out = dict(a)
    if "cursor" in b:
        ca, cb = a.get("cursor"), b["cursor"]
        if ca is None or (cb is not None and _cmp_key(cb) > _cmp_key(ca)):
            out["cursor"] = cb
    if "files" in b:
        out["files"] = {**a.get("files", {}), **b["files"]}
    return out


def _cmp_key(v: Any):
    # cursors travel as JSON: numbers stay numbers, timestamps are ISO strings that sort as text
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


def cursor_value(table: pa.Table, column: str) -> Any:
    """Max of the cursor column as a JSON-able value (ISO text for dates and timestamps)."""
    import pyarrow.compute as pc

    if table.num_rows == 0 or column not in table.column_names:
        return None
    v = pc.max(table.column(column)).as_py()
    if v is None:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, (int, float, str)):
        return v
    return str(v)
