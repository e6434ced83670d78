"""The AI application: Embedder + LLM deployments behind a FastAPI ingress (``eai_ray.api.http``).

Run it with ``eai serve``, ``serve run configs/serve.yaml`` or ``serve deploy configs/serve.yaml``;
``serve run serve_deployments.app:app`` also works (defaults from the environment).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from eai_ray.api.http import create_api
from eai_ray.api.settings import ApiSettings, ServeSettings
from eai_ray.processing.enrich import ServeClient
from serve_deployments.embedder import EmbedderDeployment
from serve_deployments.llm import LLMDeployment

GATEWAY_DEPLOYMENT = "Gateway"


class HandleBackend:
    """``eai_ray.api.http.Backend`` over Serve handles (called from FastAPI's worker threads)."""

    def __init__(self, embedder: DeploymentHandle, llm: DeploymentHandle) -> None:
        self._client = ServeClient(embedder=embedder, llm=llm)
        self._embedder = embedder

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._client.embed(texts)

    async def aencode(self, texts: list[str]) -> np.ndarray:
        return await self._embedder.embed.remote(texts)

    def llm(self):
        return self._client.llm

    def enrich_client(self):
        return self._client

    def health(self) -> dict[str, Any]:
        return {"backend": "serve"}


@serve.deployment(name=GATEWAY_DEPLOYMENT, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Gateway:
    def __init__(self, embedder: DeploymentHandle, llm: DeploymentHandle,
                 api: dict[str, Any] | None = None) -> None:
        self._backend = HandleBackend(embedder, llm)
        self._settings = ApiSettings.from_env(**(api or {}))

    def __serve_build_asgi_app__(self):
        return create_api(self._backend, self._settings)


def build_app(args: dict[str, Any] | None = None):
    """Application builder (``import_path: serve_deployments.app:build_app`` in configs/serve.yaml).

    args: ``gpu`` (Embedder asks for one GPU; default EAI_SERVE_GPU), ``embedder_replicas``,
    ``llm_replicas``, ``embedder_cpus``/``llm_cpus`` (Ray CPUs per replica, default 1), ``embedder_threads``
    (torch threads; default Ray's, i.e. the replica's CPUs), ``embedder_batch_wait_s`` (how long a
    model batch waits for more requests, default 0.05 s), ``llm_backend`` (default EAI_LLM_BACKEND), ``auth``, ``api_key_sha256``,
    ``max_body_bytes``, ``max_texts``, ``max_text_chars``, ``max_rows``.
    """
    args = dict(args or {})
    s = ServeSettings.from_env(gpu=args.pop("gpu", None), embedder_replicas=args.pop("embedder_replicas", None),
                               llm_replicas=args.pop("llm_replicas", None))
    llm_backend = args.pop("llm_backend", None)
    emb_cpus = float(args.pop("embedder_cpus", 1))
    llm_cpus = float(args.pop("llm_cpus", 1))
    emb_threads = args.pop("embedder_threads", None)
    emb_wait = float(args.pop("embedder_batch_wait_s", 0.05))
    api = {k: args.pop(k) for k in list(args) if k in ApiSettings.model_fields}
    if args:
        raise ValueError(f"unknown args for serve_deployments.app:build_app: {sorted(args)}")
    emb_opts: dict[str, Any] = {"num_cpus": emb_cpus}
    if s.gpu:
        emb_opts["num_gpus"] = 1
    embedder = EmbedderDeployment.options(num_replicas=s.embedder_replicas, ray_actor_options=emb_opts).bind(
        device="cuda" if s.gpu else None, threads=emb_threads, batch_wait_s=emb_wait)
    llm = LLMDeployment.options(num_replicas=s.llm_replicas, ray_actor_options={"num_cpus": llm_cpus}).bind(
        backend=llm_backend)
    return Gateway.bind(embedder, llm, api)


app = build_app
