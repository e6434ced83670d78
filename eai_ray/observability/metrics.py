"""Pipeline metrics: Ray metrics (Prometheus endpoint and Ray dashboard) when Ray runs, no-ops otherwise."""
from __future__ import annotations

from functools import cache

_TAGS = ("pipeline", "table", "layer")


class _Noop:
    def inc(self, *a, **k):
        pass

    def set(self, *a, **k):
        pass

    def observe(self, *a, **k):
        pass


@cache
def _metric(kind: str, name: str, description: str):
    try:
        import ray
        from ray.util import metrics
    except ImportError:  # pragma: no cover
        return _Noop()
    if not ray.is_initialized():
        return _Noop()
    if kind == "counter":
        return metrics.Counter(name, description=description, tag_keys=_TAGS)
    if kind == "gauge":
        return metrics.Gauge(name, description=description, tag_keys=_TAGS)
    return metrics.Histogram(name, description=description, boundaries=[0.1, 0.5, 1, 5, 15, 60, 300, 1800],
                             tag_keys=_TAGS)


def rows_written(pipeline: str, table: str, layer: str, n: int) -> None:
    if n:
        _metric("counter", "eai_rows_written", "Rows committed to a medallion table").inc(
            n, tags={"pipeline": pipeline, "table": table, "layer": layer})


def rows_quarantined(pipeline: str, table: str, n: int) -> None:
    if n:
        _metric("counter", "eai_rows_quarantined", "Rows sent to quarantine").inc(
            n, tags={"pipeline": pipeline, "table": table, "layer": "quarantine"})


def stage_seconds(pipeline: str, table: str, layer: str, seconds: float) -> None:
    _metric("histogram", "eai_stage_seconds", "Duration of a pipeline stage").observe(
        seconds, tags={"pipeline": pipeline, "table": table, "layer": layer})


def quality_score(pipeline: str, table: str, score: float) -> None:
    _metric("gauge", "eai_quality_score", "Overall quality score of the last run").set(
        score, tags={"pipeline": pipeline, "table": table, "layer": "silver"})
