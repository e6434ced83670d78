"""Where the work runs. The runner talks to an Executor; this module has the in-process one.

The Ray executor (named source actors, Ray tasks) lives in ``actors/executor.py`` so that
``eai_ray`` stays importable and testable without a Ray cluster.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from eai_ray.ingestion.base import SupportsPartitioning, merge_checkpoints
from eai_ray.ingestion.registry import connector_for


class SourceHandle(Protocol):
    def check(self) -> dict[str, Any]: ...
    def discover(self, resource: str): ...
    def plan(self, resource: str, checkpoint, parallelism: int, batch_rows: int) -> list: ...
    def read(self, resource: str, checkpoint, batch_rows: int) -> tuple[list, dict | None]: ...
    def list_tables(self) -> list[str]: ...


class Executor(Protocol):
    name: str

    def source(self, pipeline: str, source_cfg) -> SourceHandle: ...
    def parallelism(self) -> int: ...
    def map(self, fn: Callable, args: Iterable[tuple]) -> Iterator[Any]:
        """Run fn(*a) for each a; yield results as they complete."""


class LocalSource:
    """A connector called in-process (tests, `--local`)."""

    def __init__(self, source_cfg) -> None:
        self.cfg = source_cfg
        self.conn = connector_for(source_cfg)

    def check(self) -> dict[str, Any]:
        self.conn.check()
        return {"status": "healthy", "kind": self.cfg.kind, "source": self.cfg.name}

    def discover(self, resource: str):
        return self.conn.discover(resource)

    def list_tables(self) -> list[str]:
        """The tables and views a ``"*"`` entry stands for (database sources)."""
        return self.conn.list_tables()

    def plan(self, resource, checkpoint, parallelism, batch_rows):
        if isinstance(self.conn, SupportsPartitioning):
            return self.conn.plan(resource, checkpoint=checkpoint, parallelism=parallelism, batch_rows=batch_rows)
        return []

    def read(self, resource, checkpoint, batch_rows):
        tables, ckpt = [], None
        for batch in self.conn.read(resource, checkpoint=checkpoint, batch_rows=batch_rows):
            if batch.table.num_rows:
                tables.append(batch.table)
            ckpt = merge_checkpoints(ckpt, batch.checkpoint)
        return tables, ckpt


class LocalExecutor:
    name = "local"

    def __init__(self) -> None:
        self._sources: dict[str, LocalSource] = {}

    def source(self, pipeline: str, source_cfg) -> LocalSource:
        key = f"{pipeline}.{source_cfg.name}"
        if key not in self._sources or self._sources[key].cfg != source_cfg:
            self._sources[key] = LocalSource(source_cfg)
        return self._sources[key]

    def parallelism(self) -> int:
        return 1

    def map(self, fn, args):
        for a in args:
            yield fn(*a)

    def health(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        for s in self._sources.values():
            s.conn.close()


def default_parallelism() -> int:
    return max(1, os.cpu_count() or 1)
