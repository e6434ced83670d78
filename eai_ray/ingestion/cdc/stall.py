"""Stall detection for a CDC publisher: nothing published for too long while the source moved on.

A publisher is *stalled* when, for longer than ``stall_seconds``, it has made no progress (no
Kafka transaction committed, no idle heartbeat that moved its position) while the source's own
head is beyond what it covered:

- MariaDB/MySQL: ``@@gtid_binlog_pos`` (sequence number) beyond the last published GTID (every
  binlog transaction, ours or not, ends in a published marker, so an idle healthy publisher
  covers the head);
- PostgreSQL: ``pg_current_wal_lsn()`` beyond the last published commit LSN and the last idle
  heartbeat's WAL end.

Pure logic with an injectable clock (tested without sleeps); the publisher's watchdog thread
asks the source for its head every few seconds and calls ``check``.

Example::

    det = StallDetector(60.0)
    det.published(42)           # published up to GTID sequence 42
    det.check(57)               # -> None before 60 s, then the evidence dict
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class StallDetector:
    def __init__(self, stall_seconds: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = float(stall_seconds)
        self.clock = clock
        self.covered: int | None = None  # the source position the publisher has covered
        self.since = clock()  # when it last made progress (or was (re)started)
        self.baseline: int | None = None  # the head first seen while nothing was covered yet
        self.ahead_since: float | None = None  # the first check that saw the head beyond `covered`
        self.evidence: dict[str, Any] | None = None  # the current stall, until progress clears it
        self.stalls = 0

    def restarted(self, covered: int | None = None) -> None:
        """The publisher (re)started from `covered` (None: unknown, e.g. a slot). The clock runs on:
        a publisher that restarts again and again without publishing is stalled too."""
        if covered is not None:
            self.covered = max(self.covered or 0, covered)

    def waiting(self) -> None:
        """A legitimate wait (the consumer's initial snapshot, which no publisher can run ahead of):
        the clock starts again, from a fresh baseline."""
        self.since = self.clock()
        self.baseline = None
        self.ahead_since = None
        self.evidence = None

    def published(self, position: int | None = None) -> None:
        """A Kafka transaction committed (up to source position `position`): progress, even a resend."""
        if position is not None:
            self.covered = max(self.covered or 0, position)
        self.since = self.clock()
        self.ahead_since = None
        self.evidence = None

    def heartbeat(self, position: int) -> None:
        """The idle reader is at `position`: progress only if that moved the covered position."""
        if self.covered is not None and position <= self.covered:
            return
        self.published(position)

    def idle_s(self) -> float:
        return self.clock() - self.since

    def check(self, head: int | None, **context: Any) -> dict[str, Any] | None:
        """The evidence of a NEW stall (the caller restarts the publisher), else None. `head`: the
        source's current position (None: unknown, never a stall). The clock runs from the later of
        the last progress and the first check that saw the source ahead: a source that was quiet
        for an hour and then writes is not a stall the moment it writes."""
        if head is None:
            return None
        now = self.clock()
        ref = self.covered
        if ref is None:
            if self.baseline is None:
                self.baseline = head
            ref = self.baseline
        if head <= ref:
            self.ahead_since = None
            self.evidence = None
            return None
        if self.ahead_since is None:
            self.ahead_since = now
        waited = now - max(self.since, self.ahead_since)
        if waited < self.stall_seconds:
            return None
        self.stalls += 1
        self.evidence = {"stalled_for_s": round(waited, 1), "threshold_s": self.stall_seconds,
                         "published_position": self.covered, "source_position": head,
                         "behind": head - ref, "stalls": self.stalls, **context}
        self.since = now  # the next restart after another full threshold
        return self.evidence
