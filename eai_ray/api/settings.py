"""Settings of the HTTP API and of `eai serve`: API key, request limits, work bounds, Serve placement.

The API key comes from ``EAI_API_KEY``, from the file named by ``EAI_API_KEY_FILE``, or from
``~/.eai/api_key`` (``eai serve`` creates it, mode 0600, when nothing is configured). The server
only keeps its SHA-256; the key never reaches a log line or the Serve config.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eai_ray.errors import ConfigError
from eai_ray.settings import env_name, read, settings

if TYPE_CHECKING:  # the limit classes live with the work they bound; imported when asked for
    from eai_ray.processing.enrich import EnrichLimits
    from eai_ray.processing.mapping.limits import MapLimits

DEFAULT_KEY_FILE = Path("~/.eai/api_key")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_api_key(*, create: bool = False, key_file: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """(key, where it came from). With ``create``, a missing key is generated into the key file."""
    env = settings()
    if env.api_key and env.api_key.get_secret_value().strip():
        return env.api_key.get_secret_value().strip(), "EAI_API_KEY"
    path = Path(key_file or env.api_key_file).expanduser()
    if path.exists():
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read API key file {path}: {exc.strerror}", field="EAI_API_KEY_FILE") from None
        if key:
            return key, str(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return key, str(path)
    return None, "none"


class ApiSettings(BaseSettings):
    """Authentication, request limits and per-route work bounds of the HTTP API.

    Every number can be set from the environment as ``EAI_<FIELD>`` (``EAI_MAP_MAX_COLUMNS=128``).
    The limits bound the work one request can ask for; the pools bound how many expensive requests
    run (``*_concurrency``) or wait (``*_queue``) at once - beyond that a request gets 503 at once -
    and the deadlines stop a request's work (504) so a slow request cannot hold a worker for long.
    """

    model_config = SettingsConfigDict(env_prefix="EAI_", extra="ignore", populate_by_name=True)

    auth: bool = Field(default=True, validation_alias="EAI_API_AUTH",
                       description="require the API key (X-API-Key or Authorization: Bearer)")
    api_key_sha256: str | None = Field(default=None, description="SHA-256 of the accepted key")
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="larger request bodies get 413")
    max_texts: int = Field(default=2048, gt=0, description="texts per /v1/embed request")
    max_text_chars: int = Field(default=8192, gt=0, description="characters per text")
    max_rows: int = Field(default=1000, gt=0, description="rows per /v1/enrich request")
    llm_timeout: float = Field(default=60.0, gt=0)

    # /v1/map: the pair stage costs columns squared, the embedding costs tokens (MapLimits)
    map_max_columns: int = Field(default=256, gt=0, description="columns per side (source_columns, target_schema)")
    map_max_name_chars: int = Field(default=128, gt=0, description="characters per column name")
    map_max_description_chars: int = Field(default=512, gt=0, description="characters per column description")
    map_max_samples: int = Field(default=50, gt=0, description="sample values per column")
    map_max_sample_chars: int = Field(default=256, gt=0, description="characters per sample value")
    map_max_embed_tokens: int = Field(default=8000, gt=0, description="model tokens embedded per request "
                                      "(names, descriptions, first 8 distinct samples of every column)")
    map_max_llm_calls: int = Field(default=8, ge=0, description="LLM disambiguations per request")
    map_deadline_s: float = Field(default=30.0, gt=0, description="deadline of a /v1/map request, queueing included")
    map_concurrency: int = Field(default=1, gt=0, description="/v1/map requests computed at once without Serve "
                                 "(on Serve: one per Mapper replica, see mapper_replicas)")
    map_queue: int = Field(default=2, ge=0, description="/v1/map requests waiting (on Serve: the Mapper's "
                           "max_queued_requests); more get 503")

    # /v1/enrich: work is rows x specs, embedding tokens and LLM completions (EnrichLimits)
    enrich_max_cells: int = Field(default=2000, gt=0, description="rows x specs per request")
    enrich_max_labels: int = Field(default=64, gt=0, description="labels per classify spec")
    enrich_max_label_chars: int = Field(default=4096, gt=0, description="characters of all labels and their "
                                        "descriptions, all specs together")
    enrich_max_embed_tokens: int = Field(default=8000, gt=0, description="model tokens embedded per request "
                                         "(texts of embedding-classified columns and the labels)")
    enrich_max_llm_calls: int = Field(default=32, ge=0, description="LLM completions per request (rows x LLM specs)")
    enrich_max_llm_tokens: int = Field(default=2048, ge=0, description="completion tokens per request "
                                       "(LLM completions x max_tokens)")
    enrich_deadline_s: float = Field(default=60.0, gt=0, description="deadline of a /v1/enrich request")
    enrich_concurrency: int = Field(default=2, gt=0, description="/v1/enrich requests run at once")
    enrich_queue: int = Field(default=4, ge=0, description="/v1/enrich requests waiting; more get 503")

    # /v1/sql
    sql_max_question_chars: int = Field(default=2000, gt=0, description="characters per question")
    sql_deadline_s: float = Field(default=30.0, gt=0, description="deadline of a /v1/sql request")
    sql_concurrency: int = Field(default=2, gt=0, description="/v1/sql requests run at once")
    sql_queue: int = Field(default=4, ge=0, description="/v1/sql requests waiting; more get 503")

    @classmethod
    def from_env(cls, **overrides) -> ApiSettings:
        """Settings from EAI_API_AUTH, EAI_API_KEY(_FILE) and EAI_<FIELD> (EAI_MAX_BODY_BYTES,
        EAI_MAP_MAX_COLUMNS...); explicit overrides win."""
        out = read(cls, **overrides)
        if out.auth and not out.api_key_sha256:
            key, _ = resolve_api_key()
            out.api_key_sha256 = sha256(key) if key else None
        return out

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a setting: where an operator changes a limit."""
        return env_name(cls, field)

    def map_limits(self) -> MapLimits:
        from eai_ray.processing.mapping.limits import MapLimits
        return MapLimits(**{f: getattr(self, f"map_{f}") for f in MapLimits.__dataclass_fields__})

    def enrich_limits(self) -> EnrichLimits:
        from eai_ray.processing.enrich import EnrichLimits
        return EnrichLimits(max_rows=self.max_rows, max_text_chars=self.max_text_chars,
                            **{f: getattr(self, f"enrich_{f}") for f in EnrichLimits.__dataclass_fields__
                               if f not in ("max_rows", "max_text_chars")})

    def key_ok(self, presented: str | None) -> bool:
        if not self.auth:
            return True
        if not presented or not self.api_key_sha256:
            return False  # fail closed: auth on and no key configured rejects everything
        return hmac.compare_digest(sha256(presented), self.api_key_sha256)


class ServeSettings(BaseSettings):
    """Where and how `eai serve` runs the application (``EAI_SERVE_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="EAI_SERVE_", extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="address `eai serve` listens on (0.0.0.0: every interface)")
    port: int = Field(default=8000, description="its HTTP port")
    route_prefix: str = Field(default="/", description="URL prefix of the application")
    gpu: bool = Field(default=False, description="Embedder replicas ask for a GPU")
    embedder_replicas: int = Field(default=1, description="Embedder replicas")
    llm_replicas: int = Field(default=1, description="LLM replicas")
    mapper_replicas: int = Field(default=1, description="Mapper replicas: each computes one /v1/map at a time")
    request_timeout_s: float = Field(default=120.0, gt=0, description="end-to-end HTTP timeout of the Serve proxy "
                                     "(a backstop: each expensive route has its own, shorter deadline)")

    @classmethod
    def from_env(cls, **overrides) -> ServeSettings:
        return read(cls, **overrides)


def serve_app_args(settings: ServeSettings, *, llm_backend: str | None = None,
                   auth: bool = True) -> tuple[dict, str | None]:
    """(the arguments of the Serve application, where its API key came from: None with `auth` off).

    A missing key is created (see `resolve_api_key`); only its hash goes into the arguments, so only
    the hash travels to the replicas.
    """
    app_args: dict = {"gpu": settings.gpu}
    if llm_backend:
        app_args["llm_backend"] = llm_backend
    if not auth:
        app_args["auth"] = False
        return app_args, None
    key, where = resolve_api_key(create=True)
    assert key is not None  # create=True makes one when there is none
    app_args["api_key_sha256"] = sha256(key)
    return app_args, where
