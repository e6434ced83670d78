"""`eai tables`, `eai show`, `eai history`, `eai lineage`, `eai quality`, `eai runs`: what a pipeline wrote."""
from __future__ import annotations

import datetime as dt
import json

from eai_ray.cli.common import catalog, console, emit, load, short, table_ident
from eai_ray.errors import TableNotFound, UserError


def register(add) -> None:
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


def cmd_tables(args) -> int:
    from eai_ray.storage.catalog import table_stats

    cfg, cat = catalog(args)
    rows = table_stats(cat)

    def render(rows):
        from rich.table import Table
        t = Table(title=f"tables of {cfg.name}")
        for c in ("table", "rows", "snapshots", "columns"):
            t.add_column(c, justify="right" if c != "table" else "left")
        for r in rows:
            t.add_row(r["table"], f"{r['rows']:,}", str(r["snapshots"]), str(r["columns"]))
        console().print(t)

    emit(args, rows, render)
    return 0


def _parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--as-of '{text}' is not an ISO timestamp (e.g. 2026-11-25T10:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def cmd_show(args) -> int:
    from eai_ray.storage import tables as T

    cfg, cat = catalog(args)
    tbl = T.load(cat, table_ident(args.table))
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
        quarantine = table_ident(args.table).startswith("quarantine.")
        cols = [c for c in data.column_names if args.all_columns or quarantine or not c.startswith("_eai_")]
        if quarantine and not args.all_columns:
            cols = ["_eai_rule", "_eai_reason", "_eai_position", "_eai_record"]
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[short(r[c], 200 if quarantine else 60) for c in cols])
        console().print(t)

    emit(args, rows, render)
    return 0


def cmd_history(args) -> int:
    from eai_ray.storage import tables as T

    _, cat = catalog(args)
    hist = T.history(T.load(cat, table_ident(args.table)))

    def render(hist):
        from rich.table import Table
        t = Table(title=f"history of {args.table}")
        for c in ("snapshot_id", "timestamp", "operation", "run_id", "added", "updated", "deleted", "total_rows"):
            t.add_column(c)
        for h in hist:
            t.add_row(str(h["snapshot_id"]), h["timestamp"], str(h["operation"]), str(h["run_id"]),
                      f"{h['added_rows']:,}", f"{h['updated_rows']:,}", f"{h['deleted_rows']:,}",
                      f"{h['total_rows']:,}")
        console().print(t)

    emit(args, hist, render)
    return 0


def cmd_lineage(args) -> int:
    from eai_ray.storage.lineage import LineageGraph, openlineage_events
    from eai_ray.storage.metadata import MetadataStore

    cfg = load(args)
    store = MetadataStore.for_pipeline(cfg)
    if args.openlineage:
        print(json.dumps(openlineage_events(store, namespace=cfg.name), indent=2, default=str))
        return 0
    data = LineageGraph.load(store).report(args.target)
    table, column = data["table"], data["column"]

    def render(d):
        from rich.tree import Tree
        con = console()
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

    emit(args, data, render)
    return 0


def cmd_quality(args) -> int:
    from eai_ray.storage.metadata import MetadataStore

    cfg = load(args)
    table = table_ident(args.table)
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
                      short(json.dumps(r["details"], default=str), 80))
        console().print(t)

    emit(args, rows, render)
    return 0


def cmd_runs(args) -> int:
    from eai_ray.storage.metadata import MetadataStore

    cfg = load(args)
    rows = MetadataStore.for_pipeline(cfg).runs(limit=args.limit)
    for r in rows:
        r.pop("summary", None)
    emit(args, rows, lambda rows: [print(f"{r['run_id']}  {r['status']:8s}  {r['started_at']}") for r in rows])
    return 0
