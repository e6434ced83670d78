"""What every command group of the face shares: output (`emit`, `console`, `short`), which pipeline a
command works on (`pipeline_path`, `load`, `catalog`), where a run executes (`executor`), and the one
line a command prints when an optional dependency is missing (`missing_dependency`)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from eai_ray.errors import ConfigError

LAST_PIPELINE = Path(".eai") / "last_pipeline"
OURS = ("eai_ray", "actors", "serve_deployments")  # an ImportError of these is a bug, never a missing extra


# ---------------------------------------------------------------------- output
def console():
    from rich.console import Console
    con = Console()
    if not con.is_terminal:
        con = Console(width=160)  # logs and CI: do not squeeze tables into 80 columns
    return con


def emit(args, data: Any, render) -> None:
    """`data` as JSON with --json, else `render(data)`; secrets are redacted either way."""
    from eai_ray.redact import redact_tree

    data = redact_tree(data)  # nothing a command prints can carry a resolved secret
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        render(data)


def short(v: Any, n: int = 60) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


# ---------------------------------------------------------------------- the pipeline a command works on
def pipeline_path(args) -> str:
    from eai_ray.settings import settings

    path = getattr(args, "pipeline", None) or settings().pipeline
    if not path and LAST_PIPELINE.exists():
        path = LAST_PIPELINE.read_text().strip()
    if not path:
        raise ConfigError("no pipeline given", field="--pipeline",
                          expected="-p PIPELINE.yaml, EAI_PIPELINE, or run `eai run`/`eai demo` first in this folder")
    return path


def remember(path: str) -> None:
    try:
        LAST_PIPELINE.parent.mkdir(exist_ok=True)
        LAST_PIPELINE.write_text(os.path.abspath(path))
    except OSError:
        pass


def load(args):
    from eai_ray.config import load_pipeline
    return load_pipeline(pipeline_path(args))


def catalog(args):
    from eai_ray.storage.catalog import open_catalog
    cfg = load(args)
    return cfg, open_catalog(cfg)


def table_ident(name: str) -> str:
    from eai_ray.storage.catalog import split_name
    ns, t = split_name(name)
    return f"{ns}.{t}"


def executor(args, cfg):
    """(executor, Ray info): in this process with --local, else through Ray actors (None info: local)."""
    if getattr(args, "local", False):
        from eai_ray.orchestration.executor import LocalExecutor
        return LocalExecutor(), None
    from eai_ray.runtime import ensure_ray
    info = ensure_ray(cfg.ray, quiet=True)
    from actors.executor import RayExecutor
    return RayExecutor(detached=not info["local"]), info


# ---------------------------------------------------------------------- optional dependencies
def require(*modules: str) -> None:
    """Raise ModuleNotFoundError for the first top-level module that is not installed (checked without
    importing it: before a command starts anything it could not finish)."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)


def is_missing_dependency(exc: ImportError) -> bool:
    """An ImportError of a third-party module (an optional dependency not installed), not of our own code."""
    return not (exc.name or "").startswith(OURS)


def missing_dependency(command: str, exc: ImportError, extra: str | None) -> str:
    """The one line that says what to install."""
    what = f"eai-ray[{extra}]" if extra else "eai-ray"
    module = exc.name or "an optional dependency"
    reason = "which is not installed" if isinstance(exc, ModuleNotFoundError) else f"which failed to import ({exc})"
    return f"error: `eai {command}` needs {module}, {reason}: pip install '{what}'"
