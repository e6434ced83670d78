"""One change event model for every log-based source (PostgreSQL WAL, MariaDB/MySQL binlog).

A source yields, in commit order, ``ChangeEvent``s grouped by ``TxEnd`` markers (a micro-batch
is cut only at a transaction end, so a flush never holds half a transaction) and ``BadEvent``s
for messages it could not decode (quarantined with the reason; the stream goes on).

Positions are fixed-width hex strings that sort in commit order across sources of one kind:
``<commit position: 16 hex><index in the transaction: 8 hex>``. PostgreSQL's commit position
is the commit LSN, MariaDB's the GTID sequence number. A snapshot row carries the snapshot's
consistent point with index 0, so every streamed change after it sorts higher. Every Iceberg
table the sink writes records the highest position it holds (``eai.cdc_position``): an event
at or below it is already there and is skipped, which makes replays after a crash harmless.

Example::

    pos = position(0x16B3748, 3)      # '00000000016B374800000003'
    commit_of(pos)                    # 0x16B3748
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Op = Literal["r", "c", "u", "d", "t"]  # snapshot read, create, update, delete, truncate
OPS: tuple[str, ...] = ("r", "c", "u", "d", "t")

_POS_WIDTH = 24


def position(commit: int, index: int = 0) -> str:
    return f"{commit:016X}{index:08X}"


def commit_of(pos: str) -> int:
    return int(pos[:16], 16)


def end_of(commit: int) -> str:
    """The highest position inside the transaction committed at `commit`."""
    return f"{commit:016X}FFFFFFFF"


ZERO = position(0, 0)


@dataclass(slots=True)
class ChangeEvent:
    table: str  # resource name from the pipeline YAML
    op: Op
    position: str
    commit: int  # LSN or GTID sequence number of the transaction's commit
    tx_id: str
    commit_time: dt.datetime | None
    key: dict[str, Any]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    unchanged: tuple[str, ...] = ()  # columns whose value did not change and was not sent (TOAST)
    schema_version: int = 1

    def values(self) -> dict[str, Any]:
        """The row this event leaves behind (after), or what it removed (before, at least the key)."""
        if self.after is not None:
            return self.after
        return self.before if self.before is not None else dict(self.key)


@dataclass(slots=True)
class TxEnd:
    """All events of one transaction were yielded; `resume` is where to start reading after it."""
    commit: int
    resume: str  # PostgreSQL: end LSN as hex; MariaDB: the GTID set after this transaction
    tx_id: str = ""
    commit_time: dt.datetime | None = None
    events: int = 0


@dataclass(slots=True)
class BadEvent:
    """A message that could not be decoded (or names a table nobody configured)."""
    reason: str
    raw: str
    position: str
    table: str | None = None


@dataclass(slots=True)
class Heartbeat:
    """The source is idle up to `resume`: nothing in between concerns the captured tables."""
    resume: str


@dataclass
class SnapshotChunk:
    """Rows of one table read in a consistent snapshot, as text columns."""
    table: str
    rows: Any  # pa.Table of string columns
    position: str
    resume: str | None = None  # where the stream resumes after this snapshot (MariaDB: its GTID)
    last: bool = True


@dataclass
class TableSpec:
    """A captured table: resource name, source object, key and source column types."""
    name: str
    source_table: str  # schema.table (PostgreSQL) or database.table (MariaDB)
    key: list[str]
    types: dict[str, Any] = field(default_factory=dict)  # column -> pyarrow type


@runtime_checkable
class CdcSource(Protocol):
    """A log-based change source. Plain class; the consumer drives it."""

    def prepare(self) -> None:
        """Create what capture needs (publication...), check the server settings."""

    def tables(self) -> list[TableSpec]: ...

    def snapshot(self, tables: list[str]) -> Iterator[SnapshotChunk]:
        """A consistent read of `tables` at a point from which the stream goes on without a gap."""

    def stream(self, resume: str | None) -> Iterator[ChangeEvent | TxEnd | BadEvent | Heartbeat | None]:
        """Changes after `resume` in commit order; None when nothing arrived for a while."""

    def ack(self, resume: str) -> None:
        """Everything up to `resume` is durably stored: the source may free its log."""

    def lag(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
