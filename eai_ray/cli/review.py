"""`eai map` and `eai review list|approve|reject|fix|export`: AI schema mapping and its human review queue."""
from __future__ import annotations

import json

from eai_ray.cli.common import load
from eai_ray.errors import UserError


def register(add) -> None:
    sp = add("map", cmd_map, "propose how a source resource's columns map onto a table (AI schema mapper)",
             extra="ai")
    sp.add_argument("--source", required=True, help="<source>.<resource> from the pipeline YAML")
    sp.add_argument("--target", required=True, help="the table to map onto, e.g. silver.customers")
    sp.add_argument("--samples", type=int, default=50, help="sample values per column")
    sp = add("review", cmd_review, "schema-mapping review queue: list, approve, reject, fix, export")
    sp.add_argument("action", choices=["list", "approve", "reject", "fix", "export"])
    sp.add_argument("id", nargs="?", help="review id (approve/reject/fix); export: the target table")
    sp.add_argument("target", nargs="?", help="fix: the right target column")
    sp.add_argument("--status", default="pending", choices=["pending", "approved", "rejected", "fixed", "all"])
    sp.add_argument("--db", help="metadata database URI (default: the pipeline's)")


def _store(args):
    from eai_ray.storage.review import ReviewStore
    if getattr(args, "db", None):
        return ReviewStore(args.db)
    return ReviewStore.for_pipeline(load(args))


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
            raise UserError("`eai review export TABLE` needs the target table, e.g. silver.customers")
        cols = store.silver_columns(table)
        import yaml
        print(json.dumps(cols, indent=2) if args.json else yaml.safe_dump({"columns": cols}, sort_keys=False))
        return 0
    if args.id is None or not str(args.id).isdigit():
        raise UserError(f"`eai review {action}` needs a review id (a number from `eai review list`)")
    args.id = int(args.id)
    if action == "approve":
        item = store.approve(args.id)
    elif action == "reject":
        item = store.reject(args.id)
    else:
        if not args.target:
            raise UserError("`eai review fix ID TARGET_COLUMN` needs the right target column")
        item = store.fix(args.id, args.target)
    print(json.dumps(item, indent=2, default=str) if args.json else
          f"review {item['id']}: {item['status']} ({item['source_column']} -> {item['target_column']}); learned")
    return 0


def cmd_map(args) -> int:
    """Map a source resource's columns onto an existing table; doubtful mappings go to the review queue."""
    from eai_ray.orchestration.mapping import propose_mapping

    result = propose_mapping(load(args), args.source, args.target, samples=args.samples)
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
