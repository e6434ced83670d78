"""`eai review list|approve|reject|fix|export`: the human review queue of schema mappings."""
from __future__ import annotations

import json


def _store(args):
    from eai_ray.storage.review import ReviewStore
    if getattr(args, "db", None):
        return ReviewStore(args.db)
    from eai_ray.config import load_pipeline
    from eai_ray.cli import _pipeline_path
    return ReviewStore.for_pipeline(load_pipeline(_pipeline_path(args)))


def cmd_review(args) -> int:
    store = _store(args)
    action = args.action
    if action == "list":
        data = store.list(args.status)
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            for r in data:
                print(f"{r['id']:>5}  {r['status']:8s}  {r['source_table'] or '-'}.{r['source_column']} -> "
                      f"{r['target_table'] or '-'}.{r['target_column']}  conf={r['confidence']:.2f}  {r['rationale']}")
            if not data:
                print(f"no {args.status} reviews")
        return 0
    if action == "export":
        table = args.target or args.id
        if not table:
            from eai_ray.errors import UserError
            raise UserError("`eai review export TABLE` needs the target table, e.g. silver.customers")
        cols = store.silver_columns(table)
        import yaml
        print(json.dumps(cols, indent=2) if args.json else yaml.safe_dump({"columns": cols}, sort_keys=False))
        return 0
    if args.id is None or not str(args.id).isdigit():
        from eai_ray.errors import UserError
        raise UserError(f"`eai review {action}` needs a review id (a number from `eai review list`)")
    args.id = int(args.id)
    if action == "approve":
        item = store.approve(args.id)
    elif action == "reject":
        item = store.reject(args.id)
    else:
        if not args.target:
            from eai_ray.errors import UserError
            raise UserError("`eai review fix ID TARGET_COLUMN` needs the right target column")
        item = store.fix(args.id, args.target)
    print(json.dumps(item, indent=2, default=str) if args.json else
          f"review {item['id']}: {item['status']} ({item['source_column']} -> {item['target_column']}); learned")
    return 0


def cmd_map(args) -> int:
    """Map a source resource's columns onto an existing table; doubtful mappings go to the review queue."""
    from eai_ray.config import load_pipeline
    from eai_ray.cli import _pipeline_path, _table_ident
    from eai_ray.errors import UserError
    from eai_ray.orchestration.executor import LocalSource
    from eai_ray.processing.mapping import map_columns
    from eai_ray.storage import tables as T
    from eai_ray.storage.catalog import open_catalog
    from eai_ray.storage.review import ReviewStore

    cfg = load_pipeline(_pipeline_path(args))
    if args.source.count(".") != 1:
        raise UserError(f"--source '{args.source}' must be '<source>.<resource>', e.g. partner.customers")
    source_name, resource = args.source.split(".")
    try:
        src = LocalSource(cfg.source(source_name))
    except KeyError:
        raise UserError(f"no source '{source_name}' in {cfg.source_file}; "
                        f"sources: {', '.join(s.name for s in cfg.sources)}") from None
    discovered = src.discover(resource)
    sample, _ = src.read(resource, None, args.samples)
    rows = sample[0].slice(0, args.samples).to_pylist() if sample else []
    source_columns = [{"name": c.name, "type": str(c.type),
                       "samples": [r.get(c.name) for r in rows if r.get(c.name) is not None][:args.samples]}
                      for c in discovered.columns if not c.name.startswith("_eai_")]
    target = _table_ident(args.target)
    tbl = T.load(open_catalog(cfg), target)
    data = T.read(tbl, limit=args.samples)
    target_schema = [{"name": f.name, "type": str(f.type),
                      "samples": [v for v in data.column(f.name).to_pylist() if v is not None][:args.samples]}
                     for f in tbl.schema().as_arrow() if not f.name.startswith("_eai_")]
    store = ReviewStore.for_pipeline(cfg)
    result = map_columns(source_columns, target_schema, store=store, source_table=args.source,
                         target_table=target)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for m in result:
            print(f"{m['source']:>24} -> {m['target'] or '(no match)':<24} conf={m['confidence']:.2f}  "
                  f"{m['status']:9s} {m['rationale']}")
        pending = sum(m["status"] == "review" for m in result)
        if pending:
            print(f"\n{pending} mapping(s) wait for a person: eai review list")
    return 0


def register(add) -> None:
    sp = add("map", cmd_map, "propose how a source resource's columns map onto a table (AI schema mapper)")
    sp.add_argument("--source", required=True, help="<source>.<resource> from the pipeline YAML")
    sp.add_argument("--target", required=True, help="the table to map onto, e.g. silver.customers")
    sp.add_argument("--samples", type=int, default=50, help="sample values per column")
    sp = add("review", cmd_review, "schema-mapping review queue: list, approve, reject, fix, export")
    sp.add_argument("action", choices=["list", "approve", "reject", "fix", "export"])
    sp.add_argument("id", nargs="?", help="review id (approve/reject/fix); export: the target table")
    sp.add_argument("target", nargs="?", help="fix: the right target column")
    sp.add_argument("--status", default="pending", choices=["pending", "approved", "rejected", "fixed", "all"])
    sp.add_argument("--db", help="metadata database URI (default: the pipeline's)")
