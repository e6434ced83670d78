"""The `eai` command line.

Exit codes: 0 ok, 1 pipeline failure, 2 bad input or configuration. User errors print one
clear message, never a traceback. `--json` prints machine-readable output on stdout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from eai_ray.errors import ConfigError, EaiError, TableNotFound, UserError

LAST_PIPELINE = Path(".eai") / "last_pipeline"


# ---------------------------------------------------------------------- helpers
def _console():
    from rich.console import Console
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # logs and CI: do not squeeze tables into 80 columns
    return console


def _emit(args, data: Any, render) -> None:
    from eai_ray.redact import redact_tree

    data = redact_tree(data)  # nothing a command prints can carry a resolved secret
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        render(data)


def _pipeline_path(args) -> str:
    path = getattr(args, "pipeline", None) or os.environ.get("EAI_PIPELINE")
    if not path and LAST_PIPELINE.exists():
        path = LAST_PIPELINE.read_text().strip()
    if not path:
        raise ConfigError("no pipeline given", field="--pipeline",
                          expected="-p PIPELINE.yaml, EAI_PIPELINE, or run `eai run`/`eai demo` first in this folder")
    return path


def _remember(path: str) -> None:
    try:
        LAST_PIPELINE.parent.mkdir(exist_ok=True)
        LAST_PIPELINE.write_text(os.path.abspath(path))
    except OSError:
        pass


def _load(args):
    from eai_ray.config import load_pipeline
    return load_pipeline(_pipeline_path(args))


def _catalog(args):
    from eai_ray.storage.catalog import open_catalog
    cfg = _load(args)
    return cfg, open_catalog(cfg)


def _table_ident(name: str) -> str:
    from eai_ray.storage.catalog import split_name
    ns, t = split_name(name)
    return f"{ns}.{t}"


def _executor(args, cfg):
    if getattr(args, "local", False):
        from eai_ray.orchestration.executor import LocalExecutor
        return LocalExecutor(), None
    from eai_ray.runtime import ensure_ray
    info = ensure_ray(cfg.ray, quiet=True)
    from actors.executor import RayExecutor
    return RayExecutor(detached=not info["local"]), info


# ---------------------------------------------------------------------- run / demo
def cmd_run(args) -> int:
    from eai_ray.config import load_pipeline
    from eai_ray.observability.progress import Progress
    from eai_ray.observability.summary import render_summary
    from eai_ray.orchestration.runner import PipelineRunner

    cfg = load_pipeline(args.pipeline)
    _remember(args.pipeline)
    return _run(args, cfg, Progress, PipelineRunner, render_summary)


def _run(args, cfg, Progress, PipelineRunner, render_summary) -> int:
    executor, info = _executor(args, cfg)
    if info and not args.json:
        where = "local Ray" if info["local"] else f"Ray at {info['address']}"
        dash = f", dashboard {info['dashboard']}" if info.get("dashboard") else ""
        print(f"running pipeline '{cfg.name}' on {where}{dash}", file=sys.stderr)
    only = getattr(args, "only", None)
    _check_only(cfg, only)
    runner = PipelineRunner(cfg, executor=executor, progress=Progress(enabled=not args.json),
                            run_id=getattr(args, "run_id", None))
    summary = runner.run(only=only)
    _emit(args, summary.to_dict(), lambda d: render_summary(d, _console()))
    return 0 if summary.status == "ok" else 1


def _check_only(cfg, only: list[str] | None) -> None:
    """Every --only name is a source or a source.resource of the pipeline (a typo must not run nothing)."""
    from eai_ray.config import has_wildcard, resources_of

    known = {s.name for s in cfg.sources} | {f"{s.name}.{r.name}" for s in cfg.sources for r in resources_of(s)}
    open_ended = {s.name for s in cfg.sources if has_wildcard(s)}
    for name in only or []:
        if name not in known and name.split(".", 1)[0] not in open_ended:
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=1)
            raise ConfigError(f"'{name}' is neither a source nor a source.resource of pipeline '{cfg.name}'"
                              + (f"; did you mean '{close[0]}'?" if close else ""), field="--only",
                              expected=", ".join(sorted(known)))


def cmd_demo(args) -> int:
    from eai_ray.demo.sample import build_demo
    from eai_ray.config import load_pipeline
    from eai_ray.observability.progress import Progress
    from eai_ray.observability.summary import render_summary
    from eai_ray.orchestration.runner import PipelineRunner

    demo_dir = Path(args.dir).resolve()
    with build_demo(demo_dir, rows=args.rows) as demo:
        if not args.json:
            print(f"demo sources in {demo_dir}: SQLite {demo.sqlite_path.name}, files in {demo.files_dir.name}/, "
                  f"REST API at {demo.api_url}", file=sys.stderr)
        cfg = load_pipeline(demo.pipeline_path)
        _remember(str(demo.pipeline_path))
        code = _run(args, cfg, Progress, PipelineRunner, render_summary)
    if not args.json:
        print(f"\nnext: eai tables | eai show gold.revenue_by_country | eai lineage gold.revenue_by_country.revenue"
              f" | eai quality silver.customers   (pipeline: {demo.pipeline_path})", file=sys.stderr)
    return code


def cmd_validate(args) -> int:
    from eai_ray.config import load_pipeline
    from eai_ray.orchestration.dag import gold_order

    cfg = load_pipeline(args.pipeline)
    gold_order(cfg.gold)
    data = {"pipeline": cfg.name, "sources": [s.name for s in cfg.sources],
            "silver": [t.name for t in cfg.silver], "gold": [g.name for g in cfg.gold], "valid": True}
    _emit(args, data, lambda d: print(f"{args.pipeline}: valid ({len(d['sources'])} sources, "
                                      f"{len(d['silver'])} silver tables, {len(d['gold'])} gold models)"))
    return 0


# ---------------------------------------------------------------------- inspection
def cmd_sources(args) -> int:
    from eai_ray.config import resources_of
    from eai_ray.orchestration.executor import LocalExecutor

    cfg = _load(args)
    rows = []
    if args.local:
        ex = LocalExecutor()
        for s in cfg.sources:
            try:
                health = ex.source(cfg.name, s).check()
            except EaiError as exc:
                health = {"status": "unhealthy", "error": exc.to_dict()}
            rows.append({"source": s.name, "kind": s.kind, "actor": None,
                         "resources": [r.name for r in resources_of(s)], **health,
                         **_discovery(args, ex.source(cfg.name, s), s, health)})
    else:
        executor, _ = _executor(args, cfg)
        for s in cfg.sources:
            from actors.source_actor import actor_name
            handle = executor.source(cfg.name, s)
            health = handle.check()
            rows.append({"source": s.name, "kind": s.kind, "actor": actor_name(cfg.name, s.name),
                         "resources": [r.name for r in resources_of(s)], **health,
                         **_discovery(args, handle, s, health)})

    def render(rows):
        from rich.table import Table
        t = Table(title=f"sources of {cfg.name}")
        for c in ("source", "kind", "status", "latency", "actor", "resources"):
            t.add_column(c)
        for r in rows:
            status = r.get("status", "?")
            if r.get("error"):
                status += f": {r['error'].get('message', '')}"
            t.add_row(r["source"], r["kind"], status, str(r.get("latency_ms", "")), r.get("actor") or "-",
                      ", ".join(r["resources"]))
        _console().print(t)

    _emit(args, rows, render)
    return 0 if all(r.get("status") == "healthy" for r in rows) else 1


def _discovery(args, handle, source, health: dict) -> dict:
    """What discovery found per resource: for file sources with --json (the sniffed encoding, delimiter,
    header and compression, each with its confidence), for every source with --discover."""
    from eai_ray.config import resources_of

    wanted = getattr(args, "discover", False) or (getattr(args, "json", False) and source.kind == "files")
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


def cmd_tables(args) -> int:
    cfg, catalog = _catalog(args)
    rows = []
    for ns in ("bronze", "silver", "quarantine", "gold"):
        for ident in catalog.list_tables(ns):
            tbl = catalog.load_table(ident)
            snap = tbl.current_snapshot()
            total = int(snap.summary.additional_properties.get("total-records", 0)) if snap and snap.summary else 0
            rows.append({"table": ".".join(ident), "rows": total, "snapshots": len(tbl.metadata.snapshots),
                         "columns": len(tbl.schema().fields), "location": tbl.location()})

    def render(rows):
        from rich.table import Table
        t = Table(title=f"tables of {cfg.name}")
        for c in ("table", "rows", "snapshots", "columns"):
            t.add_column(c, justify="right" if c != "table" else "left")
        for r in rows:
            t.add_row(r["table"], f"{r['rows']:,}", str(r["snapshots"]), str(r["columns"]))
        _console().print(t)

    _emit(args, rows, render)
    return 0


def _parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--as-of '{text}' is not an ISO timestamp (e.g. 2026-11-25T10:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def cmd_show(args) -> int:
    from eai_ray.storage import tables as T

    cfg, catalog = _catalog(args)
    tbl = T.load(catalog, _table_ident(args.table))
    snapshot = args.snapshot
    if args.as_of:
        snapshot = T.snapshot_as_of(tbl, _parse_time(args.as_of))
        if snapshot is None:
            raise UserError(f"{args.table} has no snapshot at or before {args.as_of}")
    if snapshot is not None and tbl.snapshot_by_id(snapshot) is None:
        raise UserError(f"{args.table} has no snapshot {snapshot}; see `eai history {args.table}`")
    data = T.read(tbl, snapshot_id=snapshot, limit=args.limit)
    rows = data.to_pylist()

    def render(rows):
        from rich.table import Table
        t = Table(title=f"{args.table} ({len(rows)} rows shown)")
        quarantine = _table_ident(args.table).startswith("quarantine.")
        cols = [c for c in data.column_names if args.all_columns or quarantine or not c.startswith("_eai_")]
        if quarantine and not args.all_columns:
            cols = ["_eai_rule", "_eai_reason", "_eai_position", "_eai_record"]
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[_short(r[c], 200 if quarantine else 60) for c in cols])
        _console().print(t)

    _emit(args, rows, render)
    return 0


def _short(v: Any, n: int = 60) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def cmd_history(args) -> int:
    from eai_ray.storage import tables as T

    _, catalog = _catalog(args)
    hist = T.history(T.load(catalog, _table_ident(args.table)))

    def render(hist):
        from rich.table import Table
        t = Table(title=f"history of {args.table}")
        for c in ("snapshot_id", "timestamp", "operation", "run_id", "added", "updated", "deleted", "total_rows"):
            t.add_column(c)
        for h in hist:
            t.add_row(str(h["snapshot_id"]), h["timestamp"], str(h["operation"]), str(h["run_id"]),
                      f"{h['added_rows']:,}", f"{h['updated_rows']:,}", f"{h['deleted_rows']:,}",
                      f"{h['total_rows']:,}")
        _console().print(t)

    _emit(args, hist, render)
    return 0


def cmd_lineage(args) -> int:
    from eai_ray.storage.lineage import LineageGraph, openlineage_events
    from eai_ray.storage.metadata import MetadataStore

    cfg = _load(args)
    store = MetadataStore.for_pipeline(cfg)
    if args.openlineage:
        print(json.dumps(openlineage_events(store, namespace=cfg.name), indent=2, default=str))
        return 0
    graph = LineageGraph.load(store)
    target = args.target
    table, column = _split_target(target, graph)
    if table not in graph.tables():
        raise TableNotFound(f"no lineage recorded for {table}; known: {', '.join(sorted(graph.tables()))}")
    data = {"table": table, "column": column, "upstream": graph.upstream(table, column),
            "downstream": graph.downstream(table, column), "impact": graph.impact(table, column)}

    def render(d):
        from rich.tree import Tree
        con = _console()
        root = f"{table}.{column}" if column else table
        up = Tree(f"[bold]upstream of {root}")
        for e in d["upstream"]:
            up.add(f"{e['from']} -> {e['to']} ({e['transform']})")
        con.print(up)
        down = Tree(f"[bold]downstream of {root}")
        for e in d["downstream"]:
            down.add(f"{e['from']} -> {e['to']} ({e['transform']})")
        con.print(down)
        con.print(f"[bold]impact:[/bold] {', '.join(d['impact']) or 'none'}")

    _emit(args, data, render)
    return 0


def _split_target(target: str, graph) -> tuple[str, str | None]:
    if target in graph.tables():
        return target, None
    if "." in target:
        table, col = target.rsplit(".", 1)
        if table in graph.tables():
            return table, col
    if "." not in target:
        for ns in ("gold", "silver", "bronze"):
            if f"{ns}.{target}" in graph.tables():
                return f"{ns}.{target}", None
    return target, None


def cmd_quality(args) -> int:
    from eai_ray.storage.metadata import MetadataStore

    cfg = _load(args)
    table = _table_ident(args.table)
    rows = MetadataStore.for_pipeline(cfg).quality(table, runs_back=args.runs)
    if not rows:
        raise TableNotFound(f"no quality results for {table}; quality is measured on silver tables")

    def render(rows):
        from rich.table import Table
        t = Table(title=f"quality of {table}")
        for c in ("run_id", "dimension", "metric", "value", "details"):
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(r["run_id"], r["dimension"], r["metric"], f"{r['value']:.4f}" if r["value"] is not None else "-",
                      _short(json.dumps(r["details"], default=str), 80))
        _console().print(t)

    _emit(args, rows, render)
    return 0


def cmd_runs(args) -> int:
    from eai_ray.storage.metadata import MetadataStore

    cfg = _load(args)
    rows = MetadataStore.for_pipeline(cfg).runs(limit=args.limit)
    for r in rows:
        r.pop("summary", None)
    _emit(args, rows, lambda rows: [print(f"{r['run_id']}  {r['status']:8s}  {r['started_at']}") for r in rows])
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eai", description="eai-ray: AI-native data pipelines on Ray")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_, pipeline_arg="option"):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if pipeline_arg == "option":
            sp.add_argument("-p", "--pipeline", help="pipeline YAML (default: $EAI_PIPELINE or the last one run here)")
        elif pipeline_arg == "positional":
            sp.add_argument("pipeline", help="pipeline YAML file")
        return sp

    sp = add("run", cmd_run, "run a pipeline: sources -> bronze -> silver -> gold", "positional")
    sp.add_argument("--local", action="store_true", help="run in this process instead of on Ray")
    sp.add_argument("--only", nargs="*", help="only these sources or source.resource names")
    sp.add_argument("--run-id", help="use this run id (default: time + random)")

    sp = add("demo", cmd_demo, "build a messy sample source and run the whole pipeline on it", None)
    sp.add_argument("--dir", default="eai-demo", help="where the demo data and tables go (default ./eai-demo)")
    sp.add_argument("--rows", type=int, default=5000, help="orders in the sample database")
    sp.add_argument("--local", action="store_true", help="run in this process instead of on Ray")

    add("validate", cmd_validate, "check a pipeline YAML without running it", "positional")
    sp = add("sources", cmd_sources, "health of each source (through its Ray actor)")
    sp.add_argument("--local", action="store_true", help="check in this process instead of through Ray actors")
    sp.add_argument("--discover", action="store_true",
                    help="also discover each resource: columns, types with confidence, file format (with --json)")
    add("tables", cmd_tables, "list bronze, silver, quarantine and gold tables")
    sp = add("show", cmd_show, "print rows of a table (time travel with --snapshot / --as-of)")
    sp.add_argument("table")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--snapshot", type=int, help="read as of this snapshot id")
    sp.add_argument("--as-of", help="read as of this time (ISO 8601)")
    sp.add_argument("--all-columns", action="store_true", help="include _eai_* metadata columns")
    sp = add("history", cmd_history, "snapshots of a table, newest first")
    sp.add_argument("table")
    sp = add("lineage", cmd_lineage, "upstream, downstream and impact of a table or column")
    sp.add_argument("target", nargs="?", default="", help="TABLE or TABLE.COLUMN, e.g. gold.revenue.total")
    sp.add_argument("--openlineage", action="store_true", help="export all lineage as OpenLineage events")
    sp = add("quality", cmd_quality, "quality scores of a table over the last runs")
    sp.add_argument("table")
    sp.add_argument("--runs", type=int, default=3)
    sp = add("runs", cmd_runs, "recent runs")
    sp.add_argument("--limit", type=int, default=20)
    for module in COMMAND_MODULES:
        _register_plugin(module, sub, add)
    return p


# Capabilities with several commands (CDC, Serve, review, metrics) register them from their own module:
# each module defines `register(add)` where `add(name, fn, help, pipeline_arg)` returns an argparse parser.
COMMAND_MODULES: list[str] = [
    "eai_ray.api.cli",  # eai serve
    "eai_ray.cdc_cli",  # eai cdc start|status|stop|run
    "eai_ray.processing.mapping.commands",  # eai review list|approve|reject|fix|export
    "eai_ray.storage.semantic_commands",  # eai metrics list|query, eai ask
]


def _register_plugin(module: str, sub, add) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or "").startswith(("eai_ray", "actors", "serve_deployments")):
            raise
        return  # an optional dependency is missing: its commands say so when they are added
    mod.register(add)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_task_oom_retries", "3")
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except EaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.transient:
            print("hint: this looks transient; running again may succeed", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`eai runs --json | head`): stop quietly, like any Unix filter
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
