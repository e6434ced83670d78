"""Schema mapping of a pipeline's source onto one of its tables (`eai map`): sample both sides, map the
columns with the AI schema mapper, and queue the doubtful mappings for a person."""
from __future__ import annotations

from typing import Any

from eai_ray.errors import UserError
from eai_ray.orchestration.executor import LocalSource
from eai_ray.processing.mapping import map_columns
from eai_ray.storage import tables as T
from eai_ray.storage.catalog import open_catalog, split_name
from eai_ray.storage.review import ReviewStore


def propose_mapping(cfg, source: str, target: str, *, samples: int = 50) -> list[dict[str, Any]]:
    """How the columns of `source` ('<source>.<resource>') map onto the table `target`.

    Each mapping: {source, target, confidence, status, rationale}; the ones with status ``review``
    wait in the pipeline's review queue.
    """
    if source.count(".") != 1:
        raise UserError(f"--source '{source}' must be '<source>.<resource>', e.g. partner.customers")
    source_name, resource = source.split(".")
    try:
        src = LocalSource(cfg.source(source_name))
    except KeyError:
        raise UserError(f"no source '{source_name}' in {cfg.source_file}; "
                        f"sources: {', '.join(s.name for s in cfg.sources)}") from None
    discovered = src.discover(resource)
    sample, _ = src.read(resource, None, samples)
    rows = sample[0].slice(0, samples).to_pylist() if sample else []
    source_columns = [{"name": c.name, "type": str(c.type),
                       "samples": [r.get(c.name) for r in rows if r.get(c.name) is not None][:samples]}
                      for c in discovered.columns if not c.name.startswith("_eai_")]
    ns, name = split_name(target)
    target = f"{ns}.{name}"
    tbl = T.load(open_catalog(cfg), target)
    data = T.read(tbl, limit=samples)
    target_schema = [{"name": f.name, "type": str(f.type),
                      "samples": [v for v in data.column(f.name).to_pylist() if v is not None][:samples]}
                     for f in tbl.schema().as_arrow() if not f.name.startswith("_eai_")]
    store = ReviewStore.for_pipeline(cfg)
    return map_columns(source_columns, target_schema, store=store, source_table=source, target_table=target)
