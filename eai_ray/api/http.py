"""The HTTP API of the AI layer as a plain FastAPI app, independent of Ray Serve.

Routes: ``POST /v1/embed``, ``POST /v1/enrich``, ``POST /v1/map``, ``POST /v1/sql``,
``GET /healthz``; OpenAPI at ``/docs``. Every ``/v1`` route needs the API key (``X-API-Key``
header or ``Authorization: Bearer``): 401 without it or with a wrong one. Bodies over
``max_body_bytes`` get 413 before they are read; so do requests with too many or too long texts.
``/v1/map`` and ``/v1/sql`` call the pure functions ``eai_ray.processing.mapping.map_columns`` and
``eai_ray.processing.nl2sql.answer``; 503 "capability not installed" until they exist.

Bounded work per request: each expensive route checks its limits before any work (413 naming the
limit and the value, 422 for input that cannot be processed), runs on its own bounded pool (503
with Retry-After when it is full, so the event loop and ``/healthz`` stay free) and has a deadline
after which its work is stopped (504); a client that goes away stops its work too. A backend with
``amap`` (the Serve app) computes ``/v1/map`` in its own deployment instead of a local pool.

Example::

    from eai_ray.api.http import LocalBackend, create_api
    app = create_api(LocalBackend())           # uvicorn.run(app) serves it without Ray
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures as cf
import dataclasses
import importlib
import inspect
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from eai_ray.api.settings import ApiSettings
from eai_ray.config import EnrichSpec
from eai_ray.errors import EaiError, LLMTimeout, TransientError, UserError
from eai_ray.settings import settings as env_settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

MAPPING_FN = ("eai_ray.processing.mapping", "map_columns")
NL2SQL_FN = ("eai_ray.processing.nl2sql", "answer")
T = TypeVar("T")
# how often a waiting request looks at its deadline and its client: cheap, and a client that left
# stops its work within this long
POLL_S = 0.25
# the matcher embeds in chunks of this many texts so a stopped request stops within one chunk
EMBED_CHUNK = 128


class Backend(Protocol):
    """What the routes need: an encoder, an LLM (or None), an enrich client, and health.

    Optional: ``aencode(texts)`` (awaitable embeddings) and ``amap(payload, limits, deadline_s)``
    (the mapping computed elsewhere, e.g. a Serve deployment; raises ``ServerBusy`` when full).
    """

    def encode(self, texts: list[str]) -> np.ndarray: ...
    def llm(self): ...
    def enrich_client(self): ...
    def health(self) -> dict[str, Any]: ...


class LocalBackend:
    """The models in this process (no Ray): for tests and one-machine use."""

    def __init__(self, *, device: str = "cpu") -> None:
        from eai_ray.processing.enrich import LocalClient
        self._client = LocalClient(device=device)
        self._llm = None

    def encode(self, texts):
        return self._client.embed(texts)

    def llm(self):
        if self._llm is None:
            from eai_ray.processing.models.llm import llm_from_config
            self._llm = llm_from_config()
        return self._llm

    def enrich_client(self):
        return self._client

    def health(self):
        return {"backend": "local"}


# --------------------------------------------------------------------------- request models
class EmbedRequest(BaseModel):
    texts: list[str] = Field(description="sentences to embed", examples=[["order date", "customer name"]])
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: one string of little-endian float32 (n x dim), much smaller than JSON floats")


class EmbedResponse(BaseModel):
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    dim: int
    count: int
    embeddings: list[list[float]] | None = None
    embeddings_base64: str | None = None
    seconds: float


class EnrichRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(description="records holding the input columns")
    enrich: list[EnrichSpec] = Field(min_length=1, description="same specs as a silver table's `enrich:`")


class EnrichResponse(BaseModel):
    rows: list[dict[str, Any]]
    stats: dict[str, Any]


class ColumnIn(BaseModel):
    name: str
    type: str | None = None
    description: str | None = None
    samples: list[str | int | float | bool | None] = Field(default_factory=list, description="sample values")


class MapRequest(BaseModel):
    source_columns: list[ColumnIn] = Field(min_length=1)
    target_schema: list[ColumnIn] = Field(min_length=1, description="target columns")
    source_table: str | None = None
    target_table: str | None = None


# a NUL byte is never text a user meant, and it breaks paths: refused with 422 like any invalid field;
# the question's length is a server limit (sql_max_question_chars, 413), checked in the route
class SqlRequest(BaseModel):
    question: str = Field(min_length=1, pattern=r"^[^\x00]*$")
    pipeline: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$",
                                 description="pipeline YAML on the server; default EAI_PIPELINE")
    semantic: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$",
                                 description="semantic model YAML on the server; default EAI_SEMANTIC")
    execute: bool = Field(default=False, description="also run the validated query and return rows")
    max_rows: int = Field(default=100, gt=0, le=10_000)


# --------------------------------------------------------------------------- body limit
class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes`` (by Content-Length, or counted while streaming)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = _json_by_default(scope)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(send)
        # no trusted length (chunked upload): read the body here, at most max_bytes, then replay it
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, _replay([msg]), send)
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                return await self._reject(send)
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks),
                                               "more_body": False}], receive), send)

    async def _reject(self, send):
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _json_by_default(scope: dict) -> dict:
    """The API speaks JSON only: a body sent without a content type, or as a form (curl's ``-d``
    default), is read as JSON instead of failing validation with 422."""
    headers = list(scope.get("headers") or [])
    ctype = dict(headers).get(b"content-type", b"").split(b";")[0].strip().lower()
    if scope.get("method") != "POST" or ctype not in (b"", b"application/x-www-form-urlencoded"):
        return scope
    headers = [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]
    return {**scope, "headers": headers}


def _replay(messages: list[dict], then=None):
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}
    return receive


# --------------------------------------------------------------------------- bounded work
class ServerBusy(TransientError):
    """An expensive route's pool is full (HTTP 503 with Retry-After): a retry in a moment can help."""

    http_status = 503


class WorkStopped(TransientError):
    """A request's work was stopped: its deadline passed or its client went away (HTTP 504)."""

    http_status = 504


class CancelToken:
    """Shared by a request and the thread doing its work: the work calls ``check`` between steps."""

    def __init__(self, deadline_s: float, *, what: str = "the request", clock: Callable[[], float] = time.monotonic):
        self.deadline_s = deadline_s
        self.what = what
        self._clock = clock
        self._until = clock() + deadline_s
        self._stopped = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        if not self._stopped.is_set():
            self.reason = reason
            self._stopped.set()

    def remaining(self) -> float:
        return self._until - self._clock()

    @property
    def cancelled(self) -> bool:
        return self._stopped.is_set() or self.remaining() <= 0

    def check(self) -> None:
        """Raise ``WorkStopped`` once the request was cancelled or its deadline passed."""
        if self.remaining() <= 0:
            self.cancel(f"its deadline of {self.deadline_s:g} s passed")
        if self._stopped.is_set():
            raise WorkStopped(f"{self.what} was stopped: {self.reason}", deadline_s=self.deadline_s)


class WorkPool:
    """A bounded thread pool for one expensive route.

    At most ``running`` requests compute and ``queue`` wait; the next one gets ``ServerBusy`` at once
    instead of piling up. A slot is freed when the work really ends, not when its request gives up,
    so work that cannot be interrupted at once still counts against the bound.
    """

    def __init__(self, name: str, *, running: int, queue: int, deadline_s: float, setting: str) -> None:
        self.name, self.deadline_s, self.setting = name, deadline_s, setting
        self.capacity = running + queue
        self._executor = cf.ThreadPoolExecutor(max_workers=running, thread_name_prefix=f"eai-{name}")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.capacity:
                raise ServerBusy(f"{self.name} is busy: {self._admitted} requests are running or waiting "
                                 f"(at most {self.capacity}); retry in a moment", route=self.name)
            self._admitted += 1

    def _release(self, _fut: Any = None) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[[CancelToken], T], request: Request | None = None) -> T:
        """``fn(token)`` on the pool; ``WorkStopped`` after the deadline or when the client leaves."""
        self._admit()
        token = CancelToken(self.deadline_s, what=self.name)
        try:
            fut = self._executor.submit(_started, fn, token)
        except BaseException:
            self._release()
            raise
        fut.add_done_callback(self._release)
        return await watch(asyncio.wrap_future(fut), token, request=request, setting=self.setting)


def _started(fn: Callable[[CancelToken], T], token: CancelToken) -> T:
    token.check()  # it waited in the queue past its deadline, or its client left: no work at all
    return fn(token)


async def watch(fut: asyncio.Future[T], token: CancelToken, *, request: Request | None = None,
                setting: str = "", on_stop: Callable[[], None] | None = None) -> T:
    """Wait for ``fut`` until the token's deadline, stopping the work when the deadline passes, the
    client disconnects or this request is cancelled (Serve cancels it when the client goes away)."""
    def stop(reason: str) -> None:
        token.cancel(reason)
        if on_stop is not None:
            on_stop()

    # a request that stopped waiting still owns its future: take its outcome so asyncio does not log it
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        while True:
            left = token.remaining()
            if left <= 0:
                stop(f"its deadline of {token.deadline_s:g} s passed")
                raise WorkStopped(f"{token.what} did not finish within {token.deadline_s:g} s"
                                  + (f" (server setting {setting})" if setting else "") + "; its work was stopped",
                                  deadline_s=token.deadline_s)
            done, _ = await asyncio.wait({fut}, timeout=min(POLL_S, left))
            if done:
                return fut.result()
            if request is not None and await request.is_disconnected():
                stop("its client went away")
                raise WorkStopped(f"{token.what} was stopped: its client went away")
    except asyncio.CancelledError:
        stop("the request was cancelled")
        raise


def chunked_encode(encode: Callable[[list[str]], np.ndarray], check: Callable[[], None],
                   chunk: int = EMBED_CHUNK) -> Callable[[list[str]], np.ndarray]:
    """``encode`` of the distinct texts, in chunks with ``check`` between them: a stopped request
    stops within one chunk, and a repeated text costs nothing (the token budget counts distinct texts)."""
    def run(texts: list[str]) -> np.ndarray:
        distinct = list(dict.fromkeys(texts))
        parts = []
        for i in range(0, len(distinct), chunk):
            check()
            parts.append(np.asarray(encode(distinct[i:i + chunk]), dtype=np.float32))
        if not parts:
            return np.zeros((0, 384), np.float32)
        vecs = np.concatenate(parts)
        row = {t: k for k, t in enumerate(distinct)}
        return vecs[[row[t] for t in texts]]
    return run


class StoppableClient:
    """An ``EnrichClient`` that checks its request's token before each model call (and between
    groups of LLM prompts), so a stopped request sends no more work to the models."""

    def __init__(self, client: Any, token: CancelToken, *, group: int = 8) -> None:
        self._client, self._token, self._group = client, token, group

    def embed(self, texts: list[str]) -> np.ndarray:
        return chunked_encode(self._client.embed, self._token.check)(list(texts))

    def complete_many(self, prompts: list[str], **kw: Any) -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(prompts), self._group):
            self._token.check()
            out += self._client.complete_many(prompts[i:i + self._group], **kw)
        return out


def map_request(payload: dict[str, Any], *, limits: Any, token: CancelToken, encode: Callable, llm: Any = None,
                scorer: Any = None, count_tokens: Callable | None = None) -> list[dict[str, Any]]:
    """One /v1/map request's work (here or in the Mapper deployment): limits first, then the matcher
    with the token's check between its stages and embedding chunks."""
    fn = capability(*MAPPING_FN)
    kwargs: dict[str, Any] = dict(source_columns=payload["source_columns"], target_schema=payload["target_schema"],
                                  source_table=payload.get("source_table") or "",
                                  target_table=payload.get("target_table") or "",
                                  encode=chunked_encode(encode, token.check), llm=llm, limits=limits,
                                  count_tokens=count_tokens, checkpoint=token.check)
    if scorer is not None:
        kwargs["scorer"] = scorer
    result = call_with(fn, **kwargs)
    return jsonable(result)


# --------------------------------------------------------------------------- helpers
def jsonable(obj: Any) -> Any:
    """Plain JSON data from dataclasses, pydantic models, numpy values and ``to_dict()`` objects."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def capability(module: str, name: str) -> Callable:
    """The function ``module.name``, or 503 "capability not installed" when it does not exist (yet)."""
    try:
        mod = importlib.import_module(module)
        fn = getattr(mod, name)
    except (ImportError, AttributeError):
        raise HTTPException(503, detail=f"capability not installed: {module}.{name}") from None
    return fn


def call_with(fn: Callable, **available: Any) -> Any:
    """Call ``fn`` with the keyword arguments it accepts out of ``available``."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**available)
    return fn(**{k: v for k, v in available.items() if k in params})


def _error_response(exc: EaiError) -> JSONResponse:
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        limit = getattr(exc, "limit", None)  # a request limit: say which server setting holds it
        detail = str(exc) + (f" [server setting {_limit_setting(exc)}]" if isinstance(limit, str) else "")
        headers = {"Retry-After": "1"} if isinstance(exc, ServerBusy) else None
        return JSONResponse(status_code=status, content={"detail": detail, "error": exc.to_dict()}, headers=headers)
    if isinstance(exc, LLMTimeout):
        status = 504
    elif exc.transient:
        status = 503
    elif isinstance(exc, UserError):
        status = 400
    else:
        status = 500
    return JSONResponse(status_code=status, content={"detail": str(exc), "error": exc.to_dict()})  # redacted


def _limit_setting(exc: Any) -> str:
    """The environment variable behind a limit error's ``limit`` (map_*, enrich_* or a shared one)."""
    from eai_ray.processing.enrich import EnrichTooLarge

    limit = exc.limit
    if limit in ("max_rows", "max_text_chars"):
        return ApiSettings.env_name(limit)
    return ApiSettings.env_name(("enrich_" if isinstance(exc, EnrichTooLarge) else "map_") + limit)


# --------------------------------------------------------------------------- the app
def create_api(backend: Backend, settings: ApiSettings | None = None) -> FastAPI:
    """The FastAPI app over ``backend``: cheap routes answer on the event loop, expensive ones on their
    own bounded pools (or the backend's ``amap``) under a deadline."""
    settings = settings or ApiSettings.from_env()
    app = FastAPI(title="eai-ray AI API", version="0.1.0",
                  description="Embeddings, enrichment, schema mapping and NL-to-SQL of eai-ray. "
                              "Send the API key as `X-API-Key` or `Authorization: Bearer <key>`.")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def require_key(key: str | None = Depends(header_key),
                    cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        presented = key or (cred.credentials if cred else None)
        if not settings.key_ok(presented):
            raise HTTPException(401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(EaiError)
    async def _eai_error(request: Request, exc: EaiError):
        return _error_response(exc)

    def check_texts(texts: list[str]) -> None:
        if len(texts) > settings.max_texts:
            raise HTTPException(413, detail=f"at most {settings.max_texts} texts per request (got {len(texts)})")
        longest = max((len(t) for t in texts), default=0)
        if longest > settings.max_text_chars:
            raise HTTPException(413, detail=f"texts are limited to {settings.max_text_chars} characters "
                                            f"(got {longest})")

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness: no key needed, no model call; answered on the event loop, never behind a worker."""
        return {"status": "ok", "auth": settings.auth, **backend.health()}

    aencode = getattr(backend, "aencode", None)  # an async backend (Serve handles) skips the thread hop
    amap = getattr(backend, "amap", None)  # a backend that maps elsewhere (the Serve Mapper deployment)
    map_limits, enrich_limits = settings.map_limits(), settings.enrich_limits()
    # one bounded pool per expensive route: a flood of one kind cannot take the workers of another
    pools = {
        "map": WorkPool("/v1/map", running=settings.map_concurrency, queue=settings.map_queue,
                        deadline_s=settings.map_deadline_s, setting=ApiSettings.env_name("map_deadline_s")),
        "enrich": WorkPool("/v1/enrich", running=settings.enrich_concurrency, queue=settings.enrich_queue,
                           deadline_s=settings.enrich_deadline_s, setting=ApiSettings.env_name("enrich_deadline_s")),
        "sql": WorkPool("/v1/sql", running=settings.sql_concurrency, queue=settings.sql_queue,
                        deadline_s=settings.sql_deadline_s, setting=ApiSettings.env_name("sql_deadline_s")),
    }
    app.state.pools = pools

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=[Depends(require_key)], tags=["models"])
    async def embed(req: EmbedRequest) -> EmbedResponse:
        """Unit-length all-MiniLM-L6-v2 embeddings (384 floats) of each text, batched across requests."""
        check_texts(req.texts)
        t0 = time.perf_counter()
        if aencode is not None:
            vecs = await aencode(req.texts)
        else:
            vecs = await run_in_threadpool(backend.encode, req.texts)
        vecs = np.asarray(vecs, dtype=np.float32)
        dim = int(vecs.shape[1]) if vecs.ndim == 2 and len(vecs) else 384
        if req.encoding_format == "base64":
            return EmbedResponse(dim=dim, count=len(vecs), seconds=time.perf_counter() - t0,
                                 embeddings_base64=base64.b64encode(vecs.astype("<f4").tobytes()).decode())
        return EmbedResponse(dim=dim, count=len(vecs), embeddings=vecs.tolist(), seconds=time.perf_counter() - t0)

    @app.post("/v1/enrich", response_model=EnrichResponse, dependencies=[Depends(require_key)], tags=["models"])
    async def enrich(req: EnrichRequest, request: Request) -> EnrichResponse:
        """Classify, extract entities or summarize a text column of the given rows into new columns.

        Limits (413): rows, rows x specs, characters per text, labels per spec, label text, embedding
        tokens and LLM completions per request; see the settings ``max_rows`` and ``enrich_*``.
        """
        if len(req.rows) > settings.max_rows:  # the cheapest refusal first, before the request queues
            raise HTTPException(413, detail=f"{len(req.rows)} rows; the limit is {settings.max_rows} (max_rows) "
                                            f"[server setting {ApiSettings.env_name('max_rows')}]")
        for spec in req.enrich:
            if req.rows and not any(spec.column in r for r in req.rows):
                raise HTTPException(422, detail=f"no row has the column '{spec.column}'")

        def work(token: CancelToken) -> EnrichResponse:
            import pyarrow as pa

            from eai_ray.processing.enrich import EnrichStats, enrich_table

            enrich_limits.check(req.rows, req.enrich)
            try:
                table = pa.Table.from_pylist(req.rows)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise HTTPException(422, detail=f"rows do not form a table: {exc}") from None
            stats = EnrichStats()
            out = enrich_table(table, req.enrich, StoppableClient(backend.enrich_client(), token), stats)
            return EnrichResponse(rows=jsonable(out.to_pylist()), stats=dataclasses.asdict(stats))

        return await pools["enrich"].run(work, request)

    @app.post("/v1/map", dependencies=[Depends(require_key)], tags=["ai"])
    async def map_columns(req: MapRequest, request: Request) -> dict[str, Any]:
        """Source columns (with sample values) + a target schema -> mappings with confidence and rationale.

        Limits (413): columns per side, characters per name, description and sample value, samples
        per column, embedding tokens per request; see the settings ``map_*``. 504 after ``map_deadline_s``.
        """
        payload = {"source_columns": [c.model_dump(exclude_none=True) for c in req.source_columns],
                   "target_schema": [c.model_dump(exclude_none=True) for c in req.target_schema],
                   "source_table": req.source_table or "", "target_table": req.target_table or ""}
        if amap is None:
            capability(*MAPPING_FN)
            return {"mappings": await pools["map"].run(
                lambda token: map_request(payload, limits=map_limits, token=token, encode=backend.encode,
                                          llm=_optional_llm(backend)), request)}
        token = CancelToken(settings.map_deadline_s, what="/v1/map")
        task = asyncio.ensure_future(amap(payload, map_limits, settings.map_deadline_s))
        return {"mappings": await watch(task, token, request=request, on_stop=task.cancel,
                                        setting=ApiSettings.env_name("map_deadline_s"))}

    @app.post("/v1/sql", dependencies=[Depends(require_key)], tags=["ai"])
    async def sql(req: SqlRequest, request: Request) -> dict[str, Any]:
        """A question -> validated read-only SQL, its validation, and (``execute``) the result rows.

        Limit (413): characters per question (``sql_max_question_chars``); 504 after ``sql_deadline_s``.
        """
        if len(req.question) > settings.sql_max_question_chars:
            raise HTTPException(413, detail=f"the question is {len(req.question)} characters long; the limit is "
                                            f"{settings.sql_max_question_chars} (sql_max_question_chars) "
                                            f"[server setting {ApiSettings.env_name('sql_max_question_chars')}]")
        fn = capability(*NL2SQL_FN)
        pipeline = req.pipeline or env_settings().pipeline
        if not pipeline:
            raise HTTPException(400, detail="no pipeline: pass 'pipeline' or set EAI_PIPELINE on the server")
        semantic = req.semantic or env_settings().semantic or None
        for given in (req.pipeline, req.semantic):  # a client may not point the server at arbitrary files
            if given and not Path(given).resolve().is_relative_to(Path.cwd().resolve()):
                raise HTTPException(403, detail="pipeline and semantic paths must lie under the server's folder")

        def work(token: CancelToken) -> dict[str, Any]:
            from eai_ray.config import load_pipeline
            from eai_ray.errors import ConfigError
            from eai_ray.storage.catalog import open_catalog

            try:
                cfg = load_pipeline(pipeline)
            except ConfigError:
                # the file's own words and the server's paths stay on the server
                raise HTTPException(422, detail="the pipeline configuration on the server is not valid; "
                                                "run `eai validate` there") from None
            # a read never creates state where a YAML points: a pipeline that has not run has no tables
            catalog: Catalog | dict[str, Any] = open_catalog(cfg) if cfg.state_path.is_dir() else {}
            token.check()
            result = call_with(fn, question=req.question, catalog=catalog, semantic=semantic, execute=req.execute,
                               limit=req.max_rows, llm=_optional_llm(backend))
            return jsonable(result)

        return await pools["sql"].run(work, request)

    return app


def _optional_llm(backend: Backend):
    try:
        return backend.llm()
    except EaiError:
        return None  # map/sql have offline paths; they say when no LLM was used
