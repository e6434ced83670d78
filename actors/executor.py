"""RayExecutor: the runner's work on Ray: named source actors and parallel Ray tasks."""
from __future__ import annotations

from typing import Any

import ray

from actors.source_actor import SourceActor, actor_name, get_or_create
from eai_ray.config import resolvable_secrets


class ActorSource:
    """Synchronous facade over a SourceActor handle, for the runner."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def check(self) -> dict[str, Any]:
        return ray.get(self.actor.check.remote())

    def discover(self, resource):
        return ray.get(self.actor.discover.remote(resource))

    def plan(self, resource, checkpoint, parallelism, batch_rows):
        return ray.get(self.actor.plan.remote(resource, checkpoint, parallelism, batch_rows))

    def read(self, resource, checkpoint, batch_rows):
        return ray.get(self.actor.read.remote(resource, checkpoint, batch_rows))


class RayExecutor:
    name = "ray"

    def __init__(self, *, detached: bool = False, max_in_flight: int | None = None) -> None:
        self.detached = detached
        self.max_in_flight = max_in_flight
        self._remote_cache: dict[Any, Any] = {}
        self._sources: dict[str, ActorSource] = {}  # holding the handles keeps non-detached actors alive

    def source(self, pipeline: str, source_cfg) -> ActorSource:
        key = actor_name(pipeline, source_cfg.name)
        if key not in self._sources:
            self._sources[key] = ActorSource(get_or_create(pipeline, source_cfg, detached=self.detached))
        else:
            ray.get(self._sources[key].actor.configure.remote(source_cfg, resolvable_secrets(source_cfg)))
        return self._sources[key]

    def parallelism(self) -> int:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn, args):
        """Submit fn as Ray tasks, at most `max_in_flight` at once; yield results as they finish."""
        remote = self._remote_cache.get(fn)
        if remote is None:
            remote = self._remote_cache[fn] = ray.remote(max_retries=3, retry_exceptions=False)(fn)
        limit = self.max_in_flight or self.parallelism() + 1
        pending, queue = [], list(args)
        queue.reverse()
        while queue or pending:
            while queue and len(pending) < limit:
                pending.append(remote.remote(*queue.pop()))
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


def list_source_actors(pipeline: str | None = None) -> list[dict[str, Any]]:
    """Live source actors in this namespace with their last health check."""
    from ray.util.state import list_actors

    out = []
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        name = a.name or ""
        if not name.startswith("eai.source."):
            continue
        if pipeline and not name.startswith(actor_name(pipeline, "")):
            continue
        try:
            health = ray.get(ray.get_actor(name).health.remote(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - report the actor anyway
            health = {"status": "unreachable", "error": str(exc)[:200]}
        out.append({"actor": name, "pid": a.pid, "node": a.node_id, **health})
    return out


__all__ = ["RayExecutor", "SourceActor", "list_source_actors"]
