"""SourceActor: one long-lived, named Ray actor per source.

A thin shell around an ``eai_ray.ingestion`` connector: it owns the connection pool,
the credentials (resolved inside the actor, never sent back) and the health state.
Restarted by Ray if its process dies (``max_restarts=-1``).
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Any

import ray

from eai_ray.config import provide_secrets, resolvable_secrets
from eai_ray.errors import EaiError
from eai_ray.ingestion.base import SupportsPartitioning, merge_checkpoints
from eai_ray.ingestion.registry import connector_for


def actor_name(pipeline: str, source: str) -> str:
    return f"eai.source.{pipeline}.{source}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class SourceActor:
    def __init__(self, source_cfg, secrets: dict[str, str] | None = None) -> None:
        provide_secrets(secrets)
        self._cfg = source_cfg
        self._conn = connector_for(source_cfg)
        self._health: dict[str, Any] = {"status": "unknown"}

    def configure(self, source_cfg, secrets: dict[str, str] | None = None) -> None:
        """Pick up a changed config (new run of an edited YAML) without restarting the actor."""
        provide_secrets(secrets)
        if source_cfg != self._cfg:
            self._conn.close()
            self._cfg = source_cfg
            self._conn = connector_for(source_cfg)

    def check(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            self._conn.check()
            self._health = {"status": "healthy", "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}
        except EaiError as exc:
            self._health = {"status": "unhealthy", "error": exc.to_dict()}
        self._health.update(kind=self._cfg.kind, source=self._cfg.name,
                            checked_at=dt.datetime.now(dt.timezone.utc).isoformat())
        return self._health

    def health(self) -> dict[str, Any]:
        return self._health

    def resources(self) -> list[str]:
        return self._conn.resources()

    def discover(self, resource: str):
        return self._conn.discover(resource)

    def plan(self, resource: str, checkpoint, parallelism: int, batch_rows: int) -> list:
        if isinstance(self._conn, SupportsPartitioning):
            return self._conn.plan(resource, checkpoint=checkpoint, parallelism=parallelism, batch_rows=batch_rows)
        return []

    def read(self, resource: str, checkpoint, batch_rows: int):
        """Read a whole (small or rate-limited) resource here; returns (tables, merged checkpoint)."""
        tables, ckpt = [], None
        for batch in self._conn.read(resource, checkpoint=checkpoint, batch_rows=batch_rows):
            if batch.table.num_rows:
                tables.append(batch.table)
            ckpt = merge_checkpoints(ckpt, batch.checkpoint)
        return tables, ckpt


def get_or_create(pipeline: str, source_cfg, *, detached: bool):
    """The source's actor, created on first use and reconfigured on later runs."""
    opts: dict[str, Any] = {"name": actor_name(pipeline, source_cfg.name), "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    secrets = resolvable_secrets(source_cfg)
    actor = SourceActor.options(**opts).remote(source_cfg, secrets)
    ray.get(actor.configure.remote(source_cfg, secrets))
    return actor
