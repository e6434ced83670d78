"""DAG compiler: orders gold models by the tables their SQL reads; cycles are config errors."""
from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from eai_ray.config import GoldModel
from eai_ray.errors import ConfigError
from eai_ray.processing.sql import referenced_tables


def gold_graph(models: list[GoldModel]) -> dict[str, set[str]]:
    """{gold model name: names of gold models it reads}."""
    names = {m.name for m in models}
    graph = {}
    for m in models:
        reads = referenced_tables(m.sql)
        graph[m.name] = {t.split(".", 1)[1] for t in reads if t.startswith("gold.") and t.split(".", 1)[1] in names}
    return graph


def gold_order(models: list[GoldModel]) -> list[GoldModel]:
    """Models in an order where every model runs after the gold models it reads."""
    by_name = {m.name: m for m in models}
    try:
        order = list(TopologicalSorter(gold_graph(models)).static_order())
    except CycleError as exc:
        raise ConfigError(f"gold models depend on each other in a cycle: {' -> '.join(exc.args[1])}",
                          field="gold", expected="models that only read silver or earlier gold models") from None
    return [by_name[n] for n in order]
