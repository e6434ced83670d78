"""The AI application: Embedder, LLM and Mapper deployments behind a FastAPI ingress (``eai_ray.api.http``).

The ingress only routes: model work runs in the Embedder and LLM replicas, schema mapping in the
Mapper's (one request at a time per replica, a short queue, then 503), so a flood of expensive
requests cannot stall ``/healthz`` or the cheap routes.

Run it with ``eai serve``, ``serve run configs/serve.yaml`` or ``serve deploy configs/serve.yaml``;
``serve run serve_deployments.app:app`` also works (defaults from the environment).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from eai_ray.api.http import ServerBusy, create_api
from eai_ray.api.settings import ApiSettings, ServeSettings
from eai_ray.errors import EaiError
from eai_ray.processing.enrich import ServeClient
from serve_deployments.embedder import EmbedderDeployment
from serve_deployments.llm import LLMDeployment
from serve_deployments.mapper import MapperDeployment

GATEWAY_DEPLOYMENT = "Gateway"


class HandleBackend:
    """``eai_ray.api.http.Backend`` over Serve handles (called from FastAPI's worker threads)."""

    def __init__(self, embedder: DeploymentHandle, llm: DeploymentHandle,
                 mapper: DeploymentHandle | None = None) -> None:
        self._client = ServeClient(embedder=embedder, llm=llm)
        self._embedder = embedder
        self._mapper = mapper
        if mapper is None:
            self.amap = None  # type: ignore[method-assign, assignment]  # no Mapper: the API maps on its local pool

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._client.embed(texts)

    async def aencode(self, texts: list[str]) -> np.ndarray:
        return await self._embedder.embed.remote(texts)

    async def amap(self, payload: dict[str, Any], limits: Any, deadline_s: float) -> list[dict[str, Any]]:
        """The mapping computed by the Mapper deployment; cancelling this call cancels the replica's work."""
        assert self._mapper is not None  # without a Mapper, amap is None (__init__)
        resp = self._mapper.map.remote(payload, limits, time.time() + deadline_s)
        try:
            return await resp
        except asyncio.CancelledError:
            resp.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - Serve wraps replica errors: hand on our typed ones
            cause = getattr(exc, "cause", exc)
            if isinstance(cause, BackPressureError):
                raise ServerBusy("/v1/map is busy: every Mapper replica is computing and its queue is full; "
                                 "retry in a moment", route="/v1/map") from None
            if isinstance(cause, EaiError):
                raise cause from None
            raise

    def llm(self):
        return self._client.llm

    def enrich_client(self):
        return self._client

    def health(self) -> dict[str, Any]:
        return {"backend": "serve"}


@serve.deployment(name=GATEWAY_DEPLOYMENT, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Gateway:
    def __init__(self, embedder: DeploymentHandle, llm: DeploymentHandle, mapper: DeploymentHandle | None = None,
                 api: dict[str, Any] | None = None) -> None:
        self._backend = HandleBackend(embedder, llm, mapper)
        self._settings = ApiSettings.from_env(**(api or {}))

    def __serve_build_asgi_app__(self):
        return create_api(self._backend, self._settings)


DEFAULT_CPUS = {"embedder_cpus": 1.0, "llm_cpus": 1.0, "mapper_cpus": 1.0}


def fit_cpus(total_cpus: float, settings: ServeSettings) -> dict[str, float]:
    """CPU requests per replica that fit a machine of ``total_cpus`` logical CPUs.

    The defaults (one CPU per Embedder, LLM and Mapper replica) need three CPUs; on a smaller local
    Ray a deployment would wait for a CPU that never comes. Here every request shrinks by the same
    factor until all replicas fit in 90% of the machine (Serve's controller and proxy ask for none),
    rounded down to 0.05 CPU. On a machine that holds the defaults they are returned unchanged.
    """
    replicas = {"embedder_cpus": settings.embedder_replicas, "llm_cpus": settings.llm_replicas,
                "mapper_cpus": settings.mapper_replicas}
    need = sum(DEFAULT_CPUS[k] * n for k, n in replicas.items())
    if need <= total_cpus:
        return dict(DEFAULT_CPUS)
    factor = 0.9 * total_cpus / need
    return {k: max(0.05, int(v * factor * 20) / 20) for k, v in DEFAULT_CPUS.items()}


def _cluster_cpus() -> float:
    """Logical CPUs of the Ray cluster the application is built on (infinite when Ray is not up)."""
    import ray

    if not ray.is_initialized():
        return float("inf")
    return float(ray.cluster_resources().get("CPU", 0)) or float("inf")


def build_app(args: dict[str, Any] | None = None):
    """Application builder (``import_path: serve_deployments.app:build_app`` in configs/serve.yaml).

    args: ``gpu`` (Embedder asks for one GPU; default EAI_SERVE_GPU), ``embedder_replicas``,
    ``llm_replicas``, ``mapper_replicas``, ``embedder_cpus``/``llm_cpus``/``mapper_cpus`` (Ray CPUs per
    replica, default 1, or shares of the cluster's CPUs when it has fewer than the replicas need:
    see ``fit_cpus``), ``embedder_threads`` (torch threads; default Ray's, i.e. the replica's CPUs),
    ``mapper_threads`` (default 1: a mapping uses one core), ``embedder_batch_wait_s`` (how long a
    model batch waits for more requests, default 0.05 s), ``llm_backend`` (default EAI_LLM_BACKEND),
    and any ``ApiSettings`` field: ``auth``, ``api_key_sha256``, ``max_body_bytes``, ``max_texts``,
    ``max_text_chars``, ``max_rows``, the ``map_*``, ``enrich_*`` and ``sql_*`` limits and deadlines.
    """
    args = dict(args or {})
    s = ServeSettings.from_env(gpu=args.pop("gpu", None), embedder_replicas=args.pop("embedder_replicas", None),
                               llm_replicas=args.pop("llm_replicas", None),
                               mapper_replicas=args.pop("mapper_replicas", None))
    llm_backend = args.pop("llm_backend", None)
    cpus = fit_cpus(_cluster_cpus(), s)
    emb_cpus = float(args.pop("embedder_cpus", cpus["embedder_cpus"]))
    llm_cpus = float(args.pop("llm_cpus", cpus["llm_cpus"]))
    emb_threads = args.pop("embedder_threads", None)
    emb_wait = float(args.pop("embedder_batch_wait_s", 0.05))
    map_cpus = float(args.pop("mapper_cpus", cpus["mapper_cpus"]))
    map_threads = int(args.pop("mapper_threads", 1))
    api = {k: args.pop(k) for k in list(args) if k in ApiSettings.model_fields}
    if args:
        raise ValueError(f"unknown args for serve_deployments.app:build_app: {sorted(args)}")
    emb_opts: dict[str, Any] = {"num_cpus": emb_cpus}
    if s.gpu:
        emb_opts["num_gpus"] = 1
    # the ignores: @serve.deployment gives a class .options/.bind, which mypy cannot see on a class decorator
    embedder = EmbedderDeployment.options(num_replicas=s.embedder_replicas, ray_actor_options=emb_opts).bind(  # type: ignore[attr-defined]
        device="cuda" if s.gpu else None, threads=emb_threads, batch_wait_s=emb_wait)
    llm = LLMDeployment.options(num_replicas=s.llm_replicas, ray_actor_options={"num_cpus": llm_cpus}).bind(  # type: ignore[attr-defined]
        backend=llm_backend)
    # the queue bound is the caller's (Serve raises BackPressureError past it): read it the way the
    # ingress will, from the args or the environment (auth off here: no key is needed to read a number)
    queue = ApiSettings.from_env(**{**api, "auth": False}).map_queue
    mapper = MapperDeployment.options(num_replicas=s.mapper_replicas, max_queued_requests=queue,  # type: ignore[attr-defined]
                                      ray_actor_options={"num_cpus": map_cpus}).bind(llm, threads=map_threads)
    return Gateway.bind(embedder, llm, mapper, api)  # type: ignore[attr-defined]


app = build_app
