"""Settings of the HTTP API and of `eai serve`: API key, request limits, Serve placement.

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

from pydantic import BaseModel, Field

from eai_ray.errors import ConfigError

DEFAULT_KEY_FILE = Path("~/.eai/api_key")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer (got {raw!r})", field=name) from None


def env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_api_key(*, create: bool = False, key_file: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """(key, where it came from). With ``create``, a missing key is generated into the key file."""
    key = os.environ.get("EAI_API_KEY")
    if key:
        return key.strip(), "EAI_API_KEY"
    path = Path(key_file or os.environ.get("EAI_API_KEY_FILE") or DEFAULT_KEY_FILE).expanduser()
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


class ApiSettings(BaseModel):
    """Authentication and request limits of the HTTP API."""

    auth: bool = Field(default=True, description="require the API key (X-API-Key or Authorization: Bearer)")
    api_key_sha256: str | None = Field(default=None, description="SHA-256 of the accepted key")
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="larger request bodies get 413")
    max_texts: int = Field(default=2048, gt=0, description="texts per /v1/embed request")
    max_text_chars: int = Field(default=8192, gt=0, description="characters per text")
    max_rows: int = Field(default=1000, gt=0, description="rows per /v1/enrich request")
    llm_timeout: float = Field(default=60.0, gt=0)

    @classmethod
    def from_env(cls, **overrides) -> "ApiSettings":
        """Settings from EAI_API_AUTH, EAI_API_KEY(_FILE), EAI_MAX_BODY_BYTES... ; explicit overrides win."""
        vals = dict(auth=env_flag("EAI_API_AUTH", True),
                    max_body_bytes=_env_int("EAI_MAX_BODY_BYTES", 1 << 20),
                    max_texts=_env_int("EAI_MAX_TEXTS", 2048),
                    max_text_chars=_env_int("EAI_MAX_TEXT_CHARS", 8192),
                    max_rows=_env_int("EAI_MAX_ROWS", 1000))
        vals.update({k: v for k, v in overrides.items() if v is not None})
        if vals.get("auth", True) and not vals.get("api_key_sha256"):
            key, _ = resolve_api_key()
            vals["api_key_sha256"] = sha256(key) if key else None
        return cls(**vals)

    def key_ok(self, presented: str | None) -> bool:
        if not self.auth:
            return True
        if not presented or not self.api_key_sha256:
            return False  # fail closed: auth on and no key configured rejects everything
        return hmac.compare_digest(sha256(presented), self.api_key_sha256)


class ServeSettings(BaseModel):
    """Where and how `eai serve` runs the application."""

    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    gpu: bool = Field(default=False, description="Embedder replicas ask for a GPU (EAI_SERVE_GPU=1)")
    embedder_replicas: int = 1
    llm_replicas: int = 1

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        vals = dict(host=os.environ.get("EAI_SERVE_HOST", "127.0.0.1"), port=_env_int("EAI_SERVE_PORT", 8000),
                    gpu=env_flag("EAI_SERVE_GPU", False))
        vals.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**vals)
