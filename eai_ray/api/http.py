"""The HTTP API of the AI layer as a plain FastAPI app, independent of Ray Serve.

Routes: ``POST /v1/embed``, ``POST /v1/enrich``, ``POST /v1/map``, ``POST /v1/sql``,
``GET /healthz``; OpenAPI at ``/docs``. Every ``/v1`` route needs the API key (``X-API-Key``
header or ``Authorization: Bearer``): 401 without it or with a wrong one. Bodies over
``max_body_bytes`` get 413 before they are read; so do requests with too many or too long texts.
``/v1/map`` and ``/v1/sql`` call the pure functions ``eai_ray.processing.mapping.map_columns`` and
``eai_ray.processing.nl2sql.answer``; 503 "capability not installed" until they exist.

Example::

    from eai_ray.api.http import LocalBackend, create_api
    app = create_api(LocalBackend())           # uvicorn.run(app) serves it without Ray
"""
from __future__ import annotations

import base64
import dataclasses
import importlib
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from eai_ray.api.settings import ApiSettings
from eai_ray.config import EnrichSpec
from eai_ray.errors import EaiError, LLMTimeout, UserError

MAPPING_FN = ("eai_ray.processing.mapping", "map_columns")
NL2SQL_FN = ("eai_ray.processing.nl2sql", "answer")


class Backend(Protocol):
    """What the routes need: an encoder, an LLM (or None), an enrich client, and health."""

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
    samples: list[Any] = Field(default_factory=list, description="sample values")


class MapRequest(BaseModel):
    source_columns: list[ColumnIn] = Field(min_length=1)
    target_schema: list[ColumnIn] = Field(min_length=1, description="target columns")
    source_table: str | None = None
    target_table: str | None = None


# a NUL byte is never text a user meant, and it breaks paths: refused with 422 like any invalid field
class SqlRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")
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


def _replay(messages: list[dict], then=None):
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}
    return receive


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
    if isinstance(exc, LLMTimeout):
        status = 504
    elif exc.transient:
        status = 503
    elif isinstance(exc, UserError):
        status = 400
    else:
        status = 500
    return JSONResponse(status_code=status, content={"detail": str(exc), "error": exc.to_dict()})  # redacted


# --------------------------------------------------------------------------- the app
def create_api(backend: Backend, settings: ApiSettings | None = None) -> FastAPI:
    """The FastAPI app over ``backend``; routes are sync so FastAPI runs them on its thread pool."""
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
    def healthz() -> dict[str, Any]:
        """Liveness: no key needed, no model call."""
        return {"status": "ok", "auth": settings.auth, **backend.health()}

    aencode = getattr(backend, "aencode", None)  # an async backend (Serve handles) skips the thread hop

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
    def enrich(req: EnrichRequest) -> EnrichResponse:
        """Classify, extract entities or summarize a text column of the given rows into new columns."""
        import pyarrow as pa
        from eai_ray.processing.enrich import EnrichStats, enrich_table

        if len(req.rows) > settings.max_rows:
            raise HTTPException(413, detail=f"at most {settings.max_rows} rows per request (got {len(req.rows)})")
        for spec in req.enrich:
            check_texts([str(r.get(spec.column) or "") for r in req.rows])
            if req.rows and not any(spec.column in r for r in req.rows):
                raise HTTPException(422, detail=f"no row has the column '{spec.column}'")
        try:
            table = pa.Table.from_pylist(req.rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise HTTPException(422, detail=f"rows do not form a table: {exc}") from None
        stats = EnrichStats()
        out = enrich_table(table, req.enrich, backend.enrich_client(), stats)
        return EnrichResponse(rows=jsonable(out.to_pylist()), stats=dataclasses.asdict(stats))

    @app.post("/v1/map", dependencies=[Depends(require_key)], tags=["ai"])
    def map_columns(req: MapRequest) -> dict[str, Any]:
        """Source columns (with sample values) + a target schema -> mappings with confidence and rationale."""
        check_texts([str(s) for c in req.source_columns for s in c.samples])
        fn = capability(*MAPPING_FN)
        result = call_with(fn, source_columns=[c.model_dump(exclude_none=True) for c in req.source_columns],
                           target_schema=[c.model_dump(exclude_none=True) for c in req.target_schema],
                           source_table=req.source_table or "", target_table=req.target_table or "",
                           encode=backend.encode, llm=_optional_llm(backend))
        return {"mappings": jsonable(result)} if isinstance(result, (list, tuple)) else jsonable(result)

    @app.post("/v1/sql", dependencies=[Depends(require_key)], tags=["ai"])
    def sql(req: SqlRequest) -> dict[str, Any]:
        """A question -> validated read-only SQL, its validation, and (``execute``) the result rows."""
        fn = capability(*NL2SQL_FN)
        pipeline = req.pipeline or os.environ.get("EAI_PIPELINE")
        if not pipeline:
            raise HTTPException(400, detail="no pipeline: pass 'pipeline' or set EAI_PIPELINE on the server")
        from eai_ray.config import load_pipeline
        from eai_ray.errors import ConfigError
        from eai_ray.storage.catalog import open_catalog

        semantic = req.semantic or os.environ.get("EAI_SEMANTIC") or None
        for given in (req.pipeline, req.semantic):  # a client may not point the server at arbitrary files
            if given and not Path(given).resolve().is_relative_to(Path.cwd().resolve()):
                raise HTTPException(403, detail="pipeline and semantic paths must lie under the server's folder")
        try:
            cfg = load_pipeline(pipeline)
        except ConfigError:
            # the file's own words and the server's paths stay on the server
            raise HTTPException(422, detail="the pipeline configuration on the server is not valid; "
                                            "run `eai validate` there") from None
        # a read never creates state where a YAML points: a pipeline that has not run has no tables
        catalog = open_catalog(cfg) if cfg.state_path.is_dir() else {}
        result = call_with(fn, question=req.question, catalog=catalog, semantic=semantic, execute=req.execute,
                           limit=req.max_rows, llm=_optional_llm(backend))
        return jsonable(result)

    return app


def _optional_llm(backend: Backend):
    try:
        return backend.llm()
    except EaiError:
        return None  # map/sql have offline paths; they say when no LLM was used
