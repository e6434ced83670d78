"""`eai validate`: what can be known to fail before a run, found without running anything.

Schema validation happens when the YAML is loaded (``eai_ray.config``). On top of that:

- **secrets**: every ``${VAR}`` / ``file:`` reference must resolve here (the value is never shown);
- **gold SQL**: each model's tables and columns must exist. A silver table's columns come from
  the lakehouse when the table was built already, else from its declared ``columns:`` (plus its
  enrichment outputs); a gold model's from the models before it. A model that reads a table whose
  columns cannot be known yet (a discovered schema never built) is reported as not checked.

Example::

    report = check_pipeline(load_pipeline("p.yaml"))
    report.problems   # ["sources[0].password: environment variable PGPASS is not set", ...]
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from eai_ray.config import PipelineConfig, SecretRef
from eai_ray.errors import EaiError, SecretError, SqlValidationError
from eai_ray.orchestration.dag import gold_order
from eai_ray.processing.sql import referenced_tables, validate_select
from eai_ray.types import arrow_type


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)  # each one would fail the run
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why


def check_pipeline(cfg: PipelineConfig, *, lakehouse: dict[str, dict[str, str]] | None = None) -> ValidationReport:
    """Problems a run of `cfg` would hit. `lakehouse`: {ns.table: {column: type}} of the tables
    built already (``catalog_schema`` of the pipeline's catalog), if any."""
    report = ValidationReport()
    for path, ref in _secret_refs(cfg):
        try:
            ref.resolve()
        except SecretError as exc:
            report.problems.append(f"{path}: {exc}")
    _check_gold(cfg, dict(lakehouse or {}), report)
    return report


def built_schemas(cfg: PipelineConfig) -> dict[str, dict[str, str]] | None:
    """{ns.table: {column: type}} of the silver and gold tables this pipeline has built, or None when
    it has no catalog yet (an embedded catalog is never created by looking)."""
    if cfg.catalog.uri is None and not (cfg.state_path / "catalog.db").exists():
        return None
    from eai_ray.processing.nl2sql import catalog_schema
    from eai_ray.storage.catalog import open_catalog

    try:
        return catalog_schema(open_catalog(cfg))
    except EaiError:
        return None


def _secret_refs(node: Any, path: str = "") -> Iterator[tuple[str, SecretRef]]:
    if isinstance(node, SecretRef):
        yield path, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _secret_refs(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _secret_refs(v, f"{path}[{i}]")
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _secret_refs(v, f"{path}.{k}")


def _check_gold(cfg: PipelineConfig, lakehouse: dict[str, dict[str, str]], report: ValidationReport) -> None:
    schema: dict[str, dict[str, str]] = {}
    unknown: set[str] = set()
    for t in cfg.silver:
        name = f"silver.{t.name}"
        if name in lakehouse:
            schema[name] = lakehouse[name]
        elif t.columns:
            cols = {c: str(arrow_type(spec.type)) for c, spec in t.columns.items()}
            cols.update({e.output: "string" for e in t.enrich if e.output})
            schema[name] = cols
        else:
            unknown.add(name)
    for name, cols in lakehouse.items():  # silver tables of wildcard sources, built already
        schema.setdefault(name, cols)
    try:
        order = gold_order(cfg.gold)
    except EaiError as exc:
        report.problems.append(str(exc))
        return
    index = {m.name: i for i, m in enumerate(cfg.gold)}
    for model in order:
        where = f"gold[{index[model.name]}] ({model.name}).sql"
        try:
            reads = referenced_tables(model.sql)
        except (SqlValidationError, EaiError) as exc:
            report.problems.append(f"{where}: {exc}")
            unknown.add(f"gold.{model.name}")
            continue
        blind = sorted(set(reads) & unknown)
        if blind:
            report.notes.append(f"{where}: not checked: the columns of {', '.join(blind)} are known only "
                                "after a run (declare silver columns to check it now)")
            unknown.add(f"gold.{model.name}")
            continue
        try:
            query = validate_select(model.sql, schema)
        except SqlValidationError as exc:
            report.problems.append(f"{where}: {exc}")
            unknown.add(f"gold.{model.name}")
            continue
        schema[f"gold.{model.name}"] = {c: "string" for c in query.columns}
