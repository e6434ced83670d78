"""`eai run`, `eai demo`, `eai validate`, `eai sources`: running a pipeline and checking its sources."""
from __future__ import annotations

import sys
from pathlib import Path

from eai_ray.cli.common import console, emit, executor, load, remember


def register(add) -> None:
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


# ---------------------------------------------------------------------- run / demo
def cmd_run(args) -> int:
    from eai_ray.config import load_pipeline

    cfg = load_pipeline(args.pipeline)
    remember(args.pipeline)
    return _run(args, cfg)


def _run(args, cfg) -> int:
    from eai_ray.observability.progress import Progress
    from eai_ray.observability.summary import render_summary
    from eai_ray.orchestration.runner import PipelineRunner
    from eai_ray.orchestration.sources import check_only

    ex, info = executor(args, cfg)
    if info and not args.json:
        where = "local Ray" if info["local"] else f"Ray at {info['address']}"
        dash = f", dashboard {info['dashboard']}" if info.get("dashboard") else ""
        print(f"running pipeline '{cfg.name}' on {where}{dash}", file=sys.stderr)
    only = getattr(args, "only", None)
    check_only(cfg, only)
    runner = PipelineRunner(cfg, executor=ex, progress=Progress(enabled=not args.json),
                            run_id=getattr(args, "run_id", None))
    summary = runner.run(only=only)
    emit(args, summary.to_dict(), lambda d: render_summary(d, console()))
    return 0 if summary.status == "ok" else 1


def cmd_demo(args) -> int:
    from eai_ray.config import load_pipeline
    from eai_ray.demo.sample import build_demo

    demo_dir = Path(args.dir).resolve()
    with build_demo(demo_dir, rows=args.rows) as demo:
        if not args.json:
            print(f"demo sources in {demo_dir}: SQLite {demo.sqlite_path.name}, files in {demo.files_dir.name}/, "
                  f"REST API at {demo.api_url}", file=sys.stderr)
        cfg = load_pipeline(demo.pipeline_path)
        remember(str(demo.pipeline_path))
        code = _run(args, cfg)
    if not args.json:
        print(f"\nnext: eai tables | eai show gold.revenue_by_country | eai lineage gold.revenue_by_country.revenue"
              f" | eai quality silver.customers   (pipeline: {demo.pipeline_path})", file=sys.stderr)
    return code


def cmd_validate(args) -> int:
    from eai_ray.config import load_pipeline
    from eai_ray.orchestration.validate import built_schemas, check_pipeline

    cfg = load_pipeline(args.pipeline)
    report = check_pipeline(cfg, lakehouse=built_schemas(cfg))
    data = {"pipeline": cfg.name, "sources": [s.name for s in cfg.sources],
            "silver": [t.name for t in cfg.silver], "gold": [g.name for g in cfg.gold],
            "valid": not report.problems, "problems": report.problems, "notes": report.notes}

    def render(d):
        if d["problems"]:
            print(f"{args.pipeline}: {len(d['problems'])} problem{'s' if len(d['problems']) > 1 else ''}",
                  file=sys.stderr)
            for p in d["problems"]:
                print(f"  - {p}", file=sys.stderr)
        else:
            print(f"{args.pipeline}: valid ({len(d['sources'])} sources, "
                  f"{len(d['silver'])} silver tables, {len(d['gold'])} gold models)")
        for n in d["notes"]:
            print(f"  note: {n}")

    emit(args, data, render)
    return 2 if report.problems else 0


# ---------------------------------------------------------------------- sources
def cmd_sources(args) -> int:
    from eai_ray.orchestration.sources import source_report

    cfg = load(args)
    rows = []
    if args.local:
        from eai_ray.orchestration.executor import LocalExecutor

        ex = LocalExecutor()
        for s in cfg.sources:
            rows.append(source_report(ex, cfg, s, discover=_discover(args, s), contain_errors=True))
    else:
        ex, _ = executor(args, cfg)
        for s in cfg.sources:
            from actors.source_actor import actor_name
            rows.append(source_report(ex, cfg, s, actor=actor_name(cfg.name, s.name), discover=_discover(args, s)))

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
        console().print(t)

    emit(args, rows, render)
    return 0 if all(r.get("status") == "healthy" for r in rows) else 1


def _discover(args, source) -> bool:
    """Discovery is shown for file sources with --json (the sniffed encoding, delimiter, header and
    compression, each with its confidence), for every source with --discover."""
    return getattr(args, "discover", False) or (getattr(args, "json", False) and source.kind == "files")
