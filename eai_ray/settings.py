"""Every ``EAI_*`` environment setting of eai-ray, read through pydantic-settings in one place.

Three groups, one prefix: ``Settings`` (this module: defaults of the command line, runtime, models
and CDC diagnostics), ``LlmSettings`` (``EAI_LLM_*``, this module) and the HTTP API's
``ApiSettings`` / ``ServeSettings`` (``eai_ray.api.settings``: request limits, deadlines, pools,
where `eai serve` listens). The README's settings table is generated from these classes and a test
keeps the two equal. Nothing else in eai_ray reads ``os.environ`` for a setting of its own.

Values are read when asked for (``settings()``), so a changed environment is seen by the next call;
a value that does not parse is a ``ConfigError`` naming the variable.

Example::

    from eai_ray.settings import settings
    settings().cache_dir        # EAI_CACHE_DIR, default ~/.cache/eai-ray
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from eai_ray.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


class Settings(BaseSettings):
    """``EAI_<FIELD>`` for each field below."""

    model_config = SettingsConfigDict(env_prefix="EAI_", extra="ignore", populate_by_name=True)

    pipeline: str | None = Field(default=None, description="pipeline YAML of commands that take -p, when not given")
    semantic: str | None = Field(default=None, description="semantic model YAML of eai ask / eai metrics and /v1/sql")
    ray_dashboard: bool = Field(default=True, description="start the Ray dashboard with a local Ray (0: off)")
    progress: bool = Field(default=False, description="progress bars even when the output is not a terminal")
    cache_dir: Path = Field(default=Path.home() / ".cache" / "eai-ray",
                            description="where the schema-mapping scorer trained at first use is cached")
    embed_device: str = Field(default="cpu", description="device of the embedding model outside Serve (cpu, cuda)")
    enrich_via: Literal["auto", "serve", "local"] = Field(
        default="auto", description="enrichment models: the Serve deployments (serve), in-process (local), "
                                    "or Serve when `eai serve` runs (auto)")
    enrich_timeout: float = Field(default=60.0, gt=0, description="seconds an enrichment LLM call may take")
    serve_url: str = Field(default="http://127.0.0.1:8000", description="where `eai serve` answers (the vllm "
                                                                         "LLM backend's default URL)")
    api_key: SecretStr | None = Field(default=None, description="the HTTP API key (else EAI_API_KEY_FILE)")
    api_key_file: Path = Field(default=Path("~/.eai/api_key"), description="file holding the HTTP API key; "
                                                                             "`eai serve` creates it (0600)")
    cdc_trace: str | None = Field(default=None, description="JSON-lines trace file of the CDC publisher's "
                                                            "resume decisions (diagnosis)")
    inject_crash: str | None = Field(default=None, description="fault injection for crash-safety tests: the "
                                                               "runner step at which the process dies")


class LlmSettings(BaseSettings):
    """``EAI_LLM_<FIELD>``; the OpenAI client's own variables are read as fallbacks."""

    model_config = SettingsConfigDict(env_prefix="EAI_LLM_", extra="ignore", populate_by_name=True)

    backend: Literal["local", "openai", "vllm", "none"] = Field(
        default="local", description="local (SmolLM2 on CPU), openai (any OpenAI-compatible API), vllm (Ray Serve "
                                     "LLM on GPU nodes), none")
    url: str | None = Field(default=None, validation_alias=AliasChoices("EAI_LLM_URL", "OPENAI_BASE_URL"),
                            description="base URL of an OpenAI-compatible API (or OPENAI_BASE_URL)")
    api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("EAI_LLM_API_KEY", "OPENAI_API_KEY"),
                                      description="its API key (or OPENAI_API_KEY, or EAI_LLM_API_KEY_FILE)")
    api_key_file: Path | None = Field(default=None, description="file holding that API key")
    model: str | None = Field(default=None, description="model name sent to that API")
    gguf: Path | None = Field(default=None, description="GGUF file of the local backend (default: SmolLM2-135M)")


def read(cls: type[S], **overrides) -> S:
    """``cls`` from the environment (explicit, non-None overrides win); a bad value is a ConfigError."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else "?"
        field = cls.model_fields.get(name)
        prefix = cls.model_config.get("env_prefix", "")
        alias = field.validation_alias if field else None
        env = (alias.choices[0] if isinstance(alias, AliasChoices) else alias) if alias else f"{prefix}{name}".upper()
        raise ConfigError(f"{err['msg'].lower()} (got {err.get('input')!r})", field=str(env),
                          expected=f"see the settings table in the README for {env}") from None


def settings() -> Settings:
    """The ``EAI_*`` settings, read now."""
    return read(Settings)


def llm_settings() -> LlmSettings:
    return read(LlmSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable of a settings field (the first alias where it has one)."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()
