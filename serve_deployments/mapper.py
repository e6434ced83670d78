"""Mapper deployment: the work of ``/v1/map`` in its own replica, one request at a time.

Schema mapping is CPU work (embeddings, pair features, the scorer). In the ingress it would hold the
Python interpreter lock that ``/healthz`` and ``/v1/embed`` need; here it runs on its own core with
its own copy of the embedding model (so ``/v1/embed``'s batches never queue behind a mapping), and
Serve's ``max_queued_requests`` turns a flood into quick 503s at the caller instead of a backlog.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import time
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from eai_ray.api.http import CancelToken, map_request

MAPPER_DEPLOYMENT = "Mapper"


@serve.deployment(name=MAPPER_DEPLOYMENT, max_ongoing_requests=1, max_queued_requests=2,
                  ray_actor_options={"num_cpus": 1})
class MapperDeployment:
    def __init__(self, llm: DeploymentHandle | None = None, *, threads: int = 1, device: str = "cpu",
                 cache_entries: int = 20_000) -> None:
        import torch
        from threadpoolctl import threadpool_limits

        from eai_ray.processing.enrich import ServeLLM
        from eai_ray.processing.mapping.limits import default_token_counter
        from eai_ray.processing.mapping.scorer import CachedEncoder, Scorer
        from eai_ray.processing.models.embedder import Embedder

        # one request at a time on `threads` cores: torch and the scorer's OpenMP stay inside them
        torch.set_num_threads(int(threads))
        threadpool_limits(limits=int(threads))
        # names and sample texts repeat across requests; the memo is bounded (clients choose the texts)
        self._encode = CachedEncoder(Embedder.load(device), max_entries=cache_entries)
        self._scorer = Scorer.default(encode=self._encode)  # loaded (or trained once) before the first request
        self._count_tokens = default_token_counter()
        self._llm = ServeLLM(llm) if llm is not None else None
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="eai-map")

    async def map(self, payload: dict[str, Any], limits: Any, deadline_at: float) -> list[dict[str, Any]]:
        """``eai_ray.api.http.map_request`` under the caller's deadline (a wall-clock time, so the time
        the request waited in the queue counts); a cancelled call stops its work at the next checkpoint."""
        token = CancelToken(max(0.0, deadline_at - time.time()), what="/v1/map")
        work = functools.partial(map_request, payload, limits=limits, token=token, encode=self._encode,
                                 llm=self._llm, scorer=self._scorer, count_tokens=self._count_tokens)
        fut = asyncio.get_running_loop().run_in_executor(self._pool, work)
        try:
            return await fut
        except asyncio.CancelledError:  # the caller gave up (deadline, client gone): stop the thread too
            token.cancel("the request was cancelled")
            raise
