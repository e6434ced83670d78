"""LLM deployment: one interface over the configured backend (EAI_LLM_BACKEND: local | openai | vllm)."""
from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from eai_ray.processing.enrich import LLM_DEPLOYMENT


@serve.deployment(name=LLM_DEPLOYMENT, max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
class LLMDeployment:
    def __init__(self, backend: str | None = None, options: dict[str, Any] | None = None) -> None:
        from eai_ray.processing.models.llm import llm_from_config

        self._llm = llm_from_config(backend, **(options or {}))

    async def complete(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0,
                       stop: list[str] | None = None, timeout: float = 60.0,
                       system: str | None = None) -> dict[str, Any]:
        """A ``Completion`` as a dict (text, prompt/completion tokens, model, seconds)."""
        if self._llm is None:
            from eai_ray.errors import ModelNotAvailable
            raise ModelNotAvailable("no LLM configured (EAI_LLM_BACKEND=none)")
        c = await asyncio.to_thread(self._llm.complete, prompt, max_tokens=max_tokens, temperature=temperature,
                                    stop=stop, timeout=timeout, system=system)
        return c.to_dict()

    def usage(self) -> dict[str, Any]:
        from eai_ray.processing.models.llm import USAGE
        return USAGE.snapshot()

    def info(self) -> dict[str, Any]:
        return {"model": getattr(self._llm, "model", None), "backend": type(self._llm).__name__}
