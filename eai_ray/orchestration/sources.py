"""The sources of a pipeline as a whole: which ones a selection names, and how each one is doing.

Used by `eai run --only` and `eai sources`; the executor decides where a source is reached (in this
process or through its Ray actor).
"""
from __future__ import annotations

import difflib
from typing import Any

from eai_ray.config import has_wildcard, resources_of
from eai_ray.errors import ConfigError, EaiError


def check_only(cfg, only: list[str] | None) -> None:
    """Every --only name is a source or a source.resource of the pipeline (a typo must not run nothing)."""
    known = {s.name for s in cfg.sources} | {f"{s.name}.{r.name}" for s in cfg.sources for r in resources_of(s)}
    open_ended = {s.name for s in cfg.sources if has_wildcard(s)}
    for name in only or []:
        if name not in known and name.split(".", 1)[0] not in open_ended:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            raise ConfigError(f"'{name}' is neither a source nor a source.resource of pipeline '{cfg.name}'"
                              + (f"; did you mean '{close[0]}'?" if close else ""), field="--only",
                              expected=", ".join(sorted(known)))


def source_report(executor, cfg, source, *, actor: str | None = None, discover: bool = False,
                  contain_errors: bool = False) -> dict[str, Any]:
    """One source's health through `executor`, and with `discover` what discovery finds per resource.

    `contain_errors`: a failing health check becomes ``status: unhealthy`` with the error, instead of
    raising. `actor`: the name of the actor that serves the source (None: in this process).
    """
    if contain_errors:
        try:
            health = executor.source(cfg.name, source).check()
        except EaiError as exc:
            health = {"status": "unhealthy", "error": exc.to_dict()}
        handle = executor.source(cfg.name, source)
    else:
        handle = executor.source(cfg.name, source)
        health = handle.check()
    return {"source": source.name, "kind": source.kind, "actor": actor,
            "resources": [r.name for r in resources_of(source)], **health,
            **_discovery(handle, source, health, discover)}


def _discovery(handle, source, health: dict, wanted: bool) -> dict:
    """What discovery found per resource (the sniffed encoding, delimiter, header and compression of a
    file, each with its confidence; columns and types with their confidence)."""
    if not wanted or health.get("status") != "healthy":
        return {}
    out = {}
    for r in resources_of(source):
        if getattr(r, "is_wildcard", False):
            continue
        try:
            out[r.name] = handle.discover(r.name).to_dict()
        except EaiError as exc:
            out[r.name] = {"error": exc.to_dict()}
    return {"discovery": out}
