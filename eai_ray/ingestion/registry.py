"""Connector plugins register here, in one place, and are imported lazily."""
from __future__ import annotations

import importlib

from eai_ray.config import with_secrets
from eai_ray.errors import ConfigError

# kind -> "module:Class"; every class takes (source_config) and implements ingestion.base.Connector
AVAILABLE_CONNECTORS: dict[str, str] = {
    "postgres": "eai_ray.ingestion.postgres:PostgresConnector",
    "mysql": "eai_ray.ingestion.mysql:MySQLConnector",
    "mariadb": "eai_ray.ingestion.mysql:MySQLConnector",
    "sqlite": "eai_ray.ingestion.sqlite:SQLiteConnector",
    "files": "eai_ray.ingestion.files:FileConnector",
    "rest": "eai_ray.ingestion.rest:RestConnector",
}


def connector_for(source):
    """Build the connector for a source config (eai_ray.config.*Source)."""
    target = AVAILABLE_CONNECTORS.get(source.kind)
    if target is None:
        raise ConfigError(f"unknown source kind '{source.kind}'", field="sources.kind",
                          expected=" | ".join(sorted(AVAILABLE_CONNECTORS)))
    module, cls = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or "").startswith("eai_ray"):
            raise
        raise ConfigError(f"connector '{source.kind}' needs a missing package: {exc.name}",
                          expected=f"pip install {exc.name}") from None
    return getattr(mod, cls)(with_secrets(source))  # references resolved here, in the process that connects
