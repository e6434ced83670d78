"""CdcActor: one long-lived, named Ray actor per CDC source (``eai.cdc.<pipeline>.<source>``).

A thin shell: the consumer loop (``eai_ray.orchestration.cdc.CdcConsumer``) runs in a thread
of the actor. Ray restarts the actor when it or its process dies (``max_restarts=-1``); the new
instance resumes from the positions committed in Iceberg, so a kill at any moment loses and
doubles nothing.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

import ray

from eai_ray.config import provide_secrets, resolvable_secrets

log = logging.getLogger(__name__)

CHECK_LIVE_S = 10.0  # how often an instance asks Ray whether it is still the actor


def _live_pid(name: str, timeout: float = 30.0) -> int | None:
    """The pid of the process Ray routes calls for actor `name` to (None: unknown right now)."""
    try:
        return ray.get(ray.get_actor(name).pid.remote(), timeout=timeout)
    except Exception:  # noqa: BLE001 - restarting, unreachable, gone: no verdict
        return None


def _exit_if_superseded(name: str, stop: threading.Event, thread: threading.Thread, what: str,
                        every_s: float = CHECK_LIVE_S) -> None:
    """Leave the process when Ray routes the actor's calls to another one.

    Seen with Ray 2.x: a ``ray.kill(actor, no_restart=False)`` that reaches a worker leased for the
    actor's restart before it runs the creation task is ignored ("Mismatched ActorID: ignoring
    KillActor"), the GCS restarts the actor elsewhere, and this worker runs ``__init__`` anyway: a
    second consumer (or publisher) of the same source, unseen by Ray, until the job ends.
    """
    me = os.getpid()
    while not stop.wait(every_s):
        live = _live_pid(name)
        if live is None or live == me:
            continue
        log.error("%s %s: this process (%d) is no longer the actor, Ray runs it in %d (a kill Ray did not "
                  "deliver); stopping", what, name, me, live)
        stop.set()
        thread.join(30)
        os._exit(1)


def actor_name(pipeline: str, source: str) -> str:
    return f"eai.cdc.{pipeline}.{source}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)  # type: ignore[call-overload]  # Ray's overloads omit actor options
class CdcActor:
    def __init__(self, cfg, source_name: str, secrets: dict[str, str] | None = None) -> None:
        from eai_ray.orchestration.cdc import build_consumer
        from eai_ray.runtime import tune_gc_for_streaming

        provide_secrets(secrets)
        self._stop = threading.Event()
        self._consumer = build_consumer(cfg, source_name)
        tune_gc_for_streaming()  # this worker process exists for the consumer alone
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="eai-cdc", daemon=True)
        self._thread.start()
        self._watch = threading.Thread(target=_exit_if_superseded, name="eai-cdc-live", daemon=True,
                                       args=(actor_name(cfg.name, source_name), self._stop, self._thread, "CDC consumer"))
        self._watch.start()

    def _run(self) -> None:
        try:
            self._consumer.run(self._stop)
        except Exception as exc:  # noqa: BLE001 - reported through status()
            self._error = f"{type(exc).__name__}: {exc}"

    def status(self, with_lag: bool = True) -> dict[str, Any]:
        out = self._consumer.status.to_dict()
        out["pid"] = os.getpid()
        out["alive"] = self._thread.is_alive()
        if self._error:
            out["fatal"] = self._error
        src = self._consumer.source
        out["walsender_pid"] = getattr(src, "walsender_pid", None)
        if with_lag:
            try:
                out["lag"] = src.lag()
            except Exception as exc:  # noqa: BLE001 - status must answer while the source is down
                out["lag"] = {"error": str(exc)}
        return out

    def pid(self) -> int:
        return os.getpid()

    def latencies(self) -> list[float]:
        return self._consumer.latencies()

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout)
        return self.status(with_lag=False)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)  # type: ignore[call-overload]  # Ray's overloads omit actor options
class KafkaPublisherActor:
    """``cdc.transport: kafka``: database log -> Kafka topics (``eai_ray.ingestion.cdc.kafka``)."""

    def __init__(self, cfg, source_name: str, secrets: dict[str, str] | None = None) -> None:
        from eai_ray.orchestration.cdc import build_publisher

        provide_secrets(secrets)
        self._stop = threading.Event()
        self._pub = build_publisher(cfg, source_name)
        from eai_ray.runtime import tune_gc_for_streaming
        tune_gc_for_streaming()  # this worker process exists for the publisher alone
        self._thread = threading.Thread(target=self._pub.run, args=(self._stop,), name="eai-cdc-pub", daemon=True)
        self._thread.start()
        self._watch = threading.Thread(target=_exit_if_superseded, name="eai-cdc-pub-live", daemon=True,
                                       args=(publisher_name(cfg.name, source_name), self._stop, self._thread,
                                             "CDC publisher"))
        self._watch.start()

    def pid(self) -> int:
        return os.getpid()

    def status(self) -> dict[str, Any]:
        """state (publishing | waiting | retrying | stalled | ...), counts, and a stall's evidence."""
        return {"pid": os.getpid(), "alive": self._thread.is_alive(), **self._pub.status()}

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout)
        return self.status()


def publisher_name(pipeline: str, source: str) -> str:
    return f"{actor_name(pipeline, source)}.publisher"


def _kafka(source) -> bool:
    return getattr(getattr(source, "cdc", None), "transport", "direct") == "kafka"


def start(cfg, source, *, detached: bool = True):
    """The source's CDC actor (with Kafka: the consumer-group member, plus the publisher actor),
    created when missing (idempotent)."""
    opts: dict[str, Any] = {"name": actor_name(cfg.name, source.name), "get_if_exists": True}
    if detached:
        opts["lifetime"] = "detached"
    consumer = CdcActor.options(**opts).remote(cfg, source.name, resolvable_secrets(source))  # type: ignore[attr-defined]  # @ray.remote
    if _kafka(source):
        pub = KafkaPublisherActor.options(**{**opts, "name": publisher_name(cfg.name, source.name)}).remote(  # type: ignore[attr-defined]  # @ray.remote
            cfg, source.name, resolvable_secrets(source))
        _held[publisher_name(cfg.name, source.name)] = pub  # a non-detached actor lives while referenced
    return consumer


_held: dict[str, Any] = {}


def find(cfg, source):
    try:
        return ray.get_actor(actor_name(cfg.name, source.name))
    except ValueError:
        return None


def find_publisher(cfg, source):
    try:
        return ray.get_actor(publisher_name(cfg.name, source.name))
    except ValueError:
        return None
