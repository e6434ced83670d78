"""The Iceberg catalog: embedded SQLite by default, PostgreSQL-backed or REST in production."""
from __future__ import annotations

import os
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from eai_ray.config import CatalogConfig, PipelineConfig, with_secrets
from eai_ray.errors import ConfigError

NAMESPACES = ("bronze", "silver", "gold", "quarantine")


def catalog_properties(cfg: CatalogConfig, state_dir: Path) -> dict[str, str]:
    """pyiceberg properties for a catalog config; defaults live under the state dir. The config's
    ${VAR} references (a password in the URI, a key in the properties) are resolved here."""
    cfg = with_secrets(cfg)
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
    """Open (and initialise) the pipeline's catalog with the medallion namespaces.

    A catalog that cannot be reached or opened is one ConfigError naming the field and the place
    (the URI without its credentials), never a driver traceback.
    """
    state = cfg.state_path
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the state folder {state}: {exc.strerror}", file=cfg.source_file,
                          field="state_dir", expected="a writable folder") from None
    props = catalog_properties(cfg.catalog, state)
    try:
        catalog = load_catalog(cfg.catalog.name, **props)
        for ns in NAMESPACES:
            catalog.create_namespace_if_not_exists(ns)
    except Exception as exc:  # noqa: BLE001 - drivers raise many types; all mean "this catalog is not usable"
        raise ConfigError(f"cannot open the Iceberg catalog at {shown_uri(props['uri'])}: "
                          f"{_first_line(exc)}", file=cfg.source_file, field="catalog.uri",
                          expected="a reachable catalog (check host, port, database and credentials)") from None
    return catalog


def shown_uri(uri: str) -> str:
    """A URI without user and password, safe for messages."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=host).geturl()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def split_name(name: str, default_ns: str = "silver") -> tuple[str, str]:
    """'gold.revenue' -> ('gold', 'revenue'); 'revenue' -> (default_ns, 'revenue')."""
    if "." in name:
        ns, table = name.split(".", 1)
        return ns, table
    return default_ns, name


def table_stats(catalog: Catalog, namespaces=("bronze", "silver", "quarantine", "gold")) -> list[dict]:
    """Every table of `namespaces`: its name, rows (of the current snapshot), snapshots, columns, location."""
    rows = []
    for ns in namespaces:
        for ident in catalog.list_tables(ns):
            tbl = catalog.load_table(ident)
            snap = tbl.current_snapshot()
            total = int(snap.summary.additional_properties.get("total-records", 0)) if snap and snap.summary else 0
            rows.append({"table": ".".join(ident), "rows": total, "snapshots": len(tbl.metadata.snapshots),
                         "columns": len(tbl.schema().fields), "location": tbl.location()})
    return rows
