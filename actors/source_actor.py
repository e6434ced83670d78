"""SourceActor: one long-lived, named Ray actor per source.

A thin shell around ``eai_ray.orchestration.executor.LocalSource``: it owns the connection pool,
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
from eai_ray.orchestration.executor import LocalSource


def actor_name(pipeline: str, source: str) -> str:
    return f"eai.source.{pipeline}.{source}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class SourceActor:
    def __init__(self, source_cfg, secrets: dict[str, str] | None = None) -> None:
        provide_secrets(secrets)
        self._source = LocalSource(source_cfg)
        self._health: dict[str, Any] = {"status": "unknown"}

    def configure(self, source_cfg, secrets: dict[str, str] | None = None) -> None:
        """Pick up a changed config (new run of an edited YAML) without restarting the actor."""
        provide_secrets(secrets)
        if source_cfg != self._source.cfg:
            self._source.conn.close()
            self._source = LocalSource(source_cfg)

    def check(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            self._health = self._source.check()
            self._health["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        except EaiError as exc:
            self._health = {"status": "unhealthy", "error": exc.to_dict(), "kind": self._source.cfg.kind,
                            "source": self._source.cfg.name}
        self._health["checked_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        return self._health

    def health(self) -> dict[str, Any]:
        return self._health

    def discover(self, resource: str):
        return self._source.discover(resource)

    def list_tables(self) -> list[str]:
        return self._source.list_tables()

    def plan(self, resource: str, checkpoint, parallelism: int, batch_rows: int) -> list:
        return self._source.plan(resource, checkpoint, parallelism, batch_rows)

    def read(self, resource: str, checkpoint, batch_rows: int):
        """Read a whole (small or rate-limited) resource here; returns (tables, merged checkpoint)."""
        return self._source.read(resource, checkpoint, batch_rows)


def get_or_create(pipeline: str, source_cfg, *, detached: bool):
    """The source's actor, created on first use and reconfigured on later runs."""
    opts: dict[str, Any] = {"name": actor_name(pipeline, source_cfg.name), "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    secrets = resolvable_secrets(source_cfg)
    actor = SourceActor.options(**opts).remote(source_cfg, secrets)  # type: ignore[attr-defined]  # @ray.remote class
    ray.get(actor.configure.remote(source_cfg, secrets))
    return actor
