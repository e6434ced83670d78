"""Quality engine, first version: completeness, validity, consistency, timeliness per table and run.

Each dimension is a score in [0, 1]; the table score is their mean over the dimensions measured.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eai_ray.config import Freshness


def completeness(table: pa.Table) -> tuple[float, dict[str, float]]:
    """Share of non-null cells, per column and overall (data columns only)."""
    cols = [c for c in table.column_names if not c.startswith("_eai_")]
    if table.num_rows == 0 or not cols:
        return 1.0, {}
    per = {c: 1 - table.column(c).null_count / table.num_rows for c in cols}
    return sum(per.values()) / len(per), per


def freshness_lag_hours(table: pa.Table, spec: Freshness, now: dt.datetime) -> float | None:
    if spec.column not in table.column_names or table.num_rows == 0:
        return None
    latest = pc.max(table.column(spec.column)).as_py()
    if latest is None:
        return None
    if isinstance(latest, dt.date) and not isinstance(latest, dt.datetime):
        latest = dt.datetime.combine(latest, dt.time(), dt.timezone.utc)
    if latest.tzinfo is None:
        latest = latest.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (now - latest).total_seconds() / 3600)


def score_table(*, silver: pa.Table, rows_in: int, quarantined: int, rules: list, freshness: Freshness | None,
                now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Quality results for one table and run, ready for MetadataStore.record_quality."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out: list[dict[str, Any]] = []
    comp, per_col = completeness(silver)
    out.append({"dimension": "completeness", "metric": "score", "value": comp, "details": per_col})
    checks = [r for r in rules if r.check not in ("references",)]
    validity = 1 - quarantined / rows_in if rows_in else 1.0
    out.append({"dimension": "validity", "metric": "score", "value": validity,
                "details": {"rows_in": rows_in, "quarantined": quarantined}})
    for r in checks:
        out.append({"dimension": "validity", "metric": f"rule:{r.rule}", "value": r.pass_rate,
                    "details": {"failed": r.failed, "evaluated": r.evaluated, "action": r.action, "check": r.check}})
    refs = [r for r in rules if r.check == "references"]
    if refs:
        cons = sum(r.pass_rate for r in refs) / len(refs)
        out.append({"dimension": "consistency", "metric": "score", "value": cons,
                    "details": {r.rule: {"failed": r.failed, "evaluated": r.evaluated} for r in refs}})
        for r in refs:
            out.append({"dimension": "consistency", "metric": f"rule:{r.rule}", "value": r.pass_rate,
                        "details": {"failed": r.failed, "evaluated": r.evaluated, "action": r.action}})
    if freshness is not None:
        lag = freshness_lag_hours(silver, freshness, now)
        ok = lag is not None and lag <= freshness.max_age_hours
        out.append({"dimension": "timeliness", "metric": "score", "value": 1.0 if ok else 0.0,
                    "details": {"lag_hours": lag, "sla_hours": freshness.max_age_hours, "column": freshness.column}})
    dims = [r["value"] for r in out if r["metric"] == "score"]
    out.append({"dimension": "overall", "metric": "score", "value": sum(dims) / len(dims), "details": {}})
    return out


def overall(results: list[dict[str, Any]]) -> dict[str, float]:
    """{dimension: score} from a list of results."""
    return {r["dimension"]: round(r["value"], 4) for r in results if r["metric"] == "score"}
