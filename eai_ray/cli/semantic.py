"""`eai metrics list|query` and `eai ask`: the semantic layer and NL-to-SQL from the command line."""
from __future__ import annotations

import json

from eai_ray.cli.common import load

LOW_CONFIDENCE = 0.6  # answers under this are marked as doubtful in the text output


def register(add) -> None:
    sp = add("metrics", cmd_metrics, "semantic-layer metrics: list them, or query them by dimensions")
    sp.add_argument("action", choices=["list", "query"])
    sp.add_argument("metric", nargs="*", help="metric names (query)")
    sp.add_argument("--by", nargs="*", help="dimensions: entity.dim or entity.dim__month")
    sp.add_argument("--where", nargs="*", help="filters such as customers.country=DE")
    sp.add_argument("--order", help="field to sort by; prefix '-' for descending")
    sp.add_argument("--limit", type=int)
    sp.add_argument("--sql", action="store_true", help="print the compiled SQL only")
    sp.add_argument("-s", "--semantic", help=SEMANTIC_HELP)
    sp = add("ask", cmd_ask, "answer a question with validated, read-only SQL (NL-to-SQL)", extra="ai")
    sp.add_argument("question")
    sp.add_argument("-s", "--semantic", help=SEMANTIC_HELP)
    sp.add_argument("--limit", type=int, default=1000)
    sp.add_argument("--sql-only", action="store_true")
    sp.add_argument("--llm", action="store_true", help="use the configured LLM when the semantic layer cannot answer")
    sp.add_argument("--dbt", help="also write the query as a dbt model under this folder")


SEMANTIC_HELP = "semantic model YAML (default: $EAI_SEMANTIC, else configs/semantic/demo.yaml when it exists here)"
DEFAULT_SEMANTIC = "configs/semantic/demo.yaml"


def _model(args, *, required: bool = True):
    """The semantic model of -s, EAI_SEMANTIC or the demo's when run from the project folder; None
    for `eai ask` without one (it then answers from the tables alone)."""
    import os

    from eai_ray.errors import ConfigError
    from eai_ray.settings import settings
    from eai_ray.storage.semantic import SemanticModel

    path = args.semantic or settings().semantic or (DEFAULT_SEMANTIC if os.path.exists(DEFAULT_SEMANTIC) else None)
    if path is None:
        if required:
            raise ConfigError("no semantic model given", field="--semantic",
                              expected="-s path/to/semantic.yaml or EAI_SEMANTIC=path")
        return None
    return SemanticModel.load(path)


def _catalog(args):
    from eai_ray.storage.catalog import open_catalog
    return open_catalog(load(args))


def _filters(where: list[str] | None) -> list:
    """--where customers.country=DE ... -> semantic-layer filters (=, !=, <, <=, >, >=)."""
    from eai_ray.storage.semantic import Filter

    filters = []
    for f in where or []:
        for op in (">=", "<=", "!=", "=", ">", "<"):
            if op in f:
                k, v = f.split(op, 1)
                filters.append(Filter(k.strip(), op, _lit(v.strip())))
                break
    return filters


def _lit(v: str):
    v = v.strip("'\"")
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def cmd_metrics(args) -> int:
    model = _model(args)
    if args.action == "list":
        data = [{"metric": m.name, "type": m.type, "entity": model.base_entity(m.name), "description": m.description}
                for m in model.metrics.values()]
        dims = [ref for ref, _, _ in model.dimension_refs()]
        if args.json:
            print(json.dumps({"metrics": data, "dimensions": dims}, indent=2))
        else:
            for d in data:
                print(f"{d['metric']:28s} {d['type']:8s} {d['entity']:16s} {d['description']}")
            print("dimensions: " + ", ".join(dims))
        return 0
    from eai_ray.processing.nl2sql import run_query

    q = model.compile(metrics=args.metric or [], dimensions=args.by or [], filters=_filters(args.where),
                      limit=args.limit,
                      order_by=[(args.order.lstrip("-"), args.order.startswith("-"))] if args.order else [])
    if args.sql:
        print(q.sql)
        return 0
    sql, rows = run_query(q.sql, _catalog(args), limit=args.limit or 1000)
    if args.json:
        print(json.dumps({"sql": sql, "rows": rows, "warnings": q.warnings}, indent=2, default=str))
    else:
        print(sql)
        for r in rows:
            print("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


def cmd_ask(args) -> int:
    from eai_ray.processing.nl2sql import answer
    llm = None
    if args.llm:
        from eai_ray.processing.models.llm import llm_from_config
        llm = llm_from_config()
    out = answer(args.question, catalog=_catalog(args), semantic=_model(args, required=False), llm=llm, execute=not args.sql_only,
                 limit=args.limit, dbt_dir=args.dbt)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    elif not out.get("sql"):
        # refused or not expressible: say why, never an empty "SQL: None"
        print(f"not answered: {out.get('error') or 'the question could not be expressed over the semantic model'}")
    else:
        conf = float(out["confidence"] or 0)
        doubt = "  (LOW confidence: check the SQL before trusting the rows)" if conf < LOW_CONFIDENCE else ""
        print(f"SQL ({out['method']}, confidence {conf:.2f}){doubt}: {out['sql']}")
        if out["error"]:
            print(f"error: {out['error']}")
        for r in out["rows"][:50]:
            print("  ".join(f"{k}={v}" for k, v in r.items()))
        print(f"tables: {', '.join(out['tables'])}; columns: {', '.join(out['used_columns'])}")
    return 0 if out["valid"] else 2
