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
        cols = store.silver_columns(args.target)
        import yaml
        print(json.dumps(cols, indent=2) if args.json else yaml.safe_dump({"columns": cols}, sort_keys=False))
        return 0
    if args.id is None:
        from eai_ray.errors import UserError
        raise UserError(f"`eai review {action}` needs a review id")
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


def register(add) -> None:
    sp = add("review", cmd_review, "schema-mapping review queue: list, approve, reject, fix, export")
    sp.add_argument("action", choices=["list", "approve", "reject", "fix", "export"])
    sp.add_argument("id", nargs="?", type=int, help="review id (approve/reject/fix)")
    sp.add_argument("target", nargs="?", help="fix: the right target column; export: the target table")
    sp.add_argument("--status", default="pending", choices=["pending", "approved", "rejected", "fixed", "all"])
    sp.add_argument("--db", help="metadata database URI (default: the pipeline's)")
