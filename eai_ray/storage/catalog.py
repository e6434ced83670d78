"""The Iceberg catalog: embedded SQLite by default, PostgreSQL-backed or REST in production."""
from __future__ import annotations

import os
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from eai_ray.config import CatalogConfig, PipelineConfig

NAMESPACES = ("bronze", "silver", "gold", "quarantine")


def catalog_properties(cfg: CatalogConfig, state_dir: Path) -> dict[str, str]:
    """pyiceberg properties for a catalog config; defaults live under the state dir."""
    props = dict(cfg.properties)
    if cfg.type == "sql":
        uri = cfg.uri or f"sqlite:///{state_dir / 'catalog.db'}"
        props.setdefault("type", "sql")
        props["uri"] = uri
        if uri.startswith("sqlite"):
            props.setdefault("init_catalog_tables", "true")
    else:
        props.setdefault("type", "rest")
        props["uri"] = cfg.uri or "http://127.0.0.1:8181"
    warehouse = cfg.warehouse or str(state_dir / "warehouse")
    if "://" not in warehouse:
        Path(warehouse).mkdir(parents=True, exist_ok=True)
        warehouse = "file://" + os.path.abspath(warehouse)
    props["warehouse"] = warehouse
    return props


def open_catalog(cfg: PipelineConfig) -> Catalog:
    """Open (and initialise) the pipeline's catalog with the medallion namespaces."""
    state = cfg.state_path
    state.mkdir(parents=True, exist_ok=True)
    props = catalog_properties(cfg.catalog, state)
    catalog = load_catalog(cfg.catalog.name, **props)
    for ns in NAMESPACES:
        catalog.create_namespace_if_not_exists(ns)
    return catalog


def split_name(name: str, default_ns: str = "silver") -> tuple[str, str]:
    """'gold.revenue' -> ('gold', 'revenue'); 'revenue' -> (default_ns, 'revenue')."""
    if "." in name:
        ns, table = name.split(".", 1)
        return ns, table
    return default_ns, name
