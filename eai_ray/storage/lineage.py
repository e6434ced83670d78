"""Column-level lineage graph over the edges kept in the metadata catalog.

Nodes are ``table.column`` (``table`` is ``source:<source>.<resource>``, ``bronze.x``,
``silver.x`` or ``gold.x``). ``upstream``/``downstream`` walk the graph; ``impact`` lists
every downstream table; ``openlineage_events`` exports the START and COMPLETE RunEvents of each job.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict, deque
from typing import Any

from eai_ray.errors import TableNotFound
from eai_ray.storage.metadata import MetadataStore

PRODUCER = "https://github.com/eai-ray/eai-ray"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"


class LineageGraph:
    """Example::

        g = LineageGraph.load(store)
        g.upstream("gold.revenue", "total")
    """

    def __init__(self, edges: list[dict[str, Any]]) -> None:
        self.edges = edges
        self._up: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        self._down: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        for e in edges:
            src, dst = (e["src_table"], e["src_column"]), (e["dst_table"], e["dst_column"])
            self._up[dst].append((*src, e["transform"]))
            self._down[src].append((*dst, e["transform"]))

    @classmethod
    def load(cls, store: MetadataStore) -> LineageGraph:
        return cls(store.edges())

    def tables(self) -> set[str]:
        return {e["src_table"] for e in self.edges} | {e["dst_table"] for e in self.edges}

    def columns(self, table: str) -> list[str]:
        cols = {c for (t, c) in list(self._up) + list(self._down) if t == table}
        return sorted(cols)

    def _walk(self, start: list[tuple[str, str]], nxt, *, upstream: bool) -> list[dict[str, Any]]:
        """Edges reached from `start`, each as data flows (`from` feeds `to`), with its distance."""
        seen, out, q = set(start), [], deque((s, 0) for s in start)
        while q:
            node, depth = q.popleft()
            for t, c, how in nxt[node]:
                a, b = (f"{t}.{c}", f"{node[0]}.{node[1]}") if upstream else (f"{node[0]}.{node[1]}", f"{t}.{c}")
                out.append({"from": a, "to": b, "transform": how, "depth": depth + 1})
                if (t, c) not in seen:
                    seen.add((t, c))
                    q.append(((t, c), depth + 1))
        return out

    def _starts(self, table: str, column: str | None) -> list[tuple[str, str]]:
        return [(table, column)] if column else [(table, c) for c in self.columns(table)]

    def upstream(self, table: str, column: str | None = None) -> list[dict[str, Any]]:
        return self._walk(self._starts(table, column), self._up, upstream=True)

    def downstream(self, table: str, column: str | None = None) -> list[dict[str, Any]]:
        return self._walk(self._starts(table, column), self._down, upstream=False)

    def impact(self, table: str, column: str | None = None) -> list[str]:
        """Every table downstream of `table[.column]`: the blast radius of a change or an incident."""
        tables = {e["to"].rsplit(".", 1)[0] for e in self.downstream(table, column)}
        return sorted(tables - {table})

    def resolve(self, target: str) -> tuple[str, str | None]:
        """'TABLE' or 'TABLE.COLUMN' (a table without its namespace: gold, silver, then bronze) -> (table, column)."""
        if target in self.tables():
            return target, None
        if "." in target:
            table, col = target.rsplit(".", 1)
            if table in self.tables():
                return table, col
        if "." not in target:
            for ns in ("gold", "silver", "bronze"):
                if f"{ns}.{target}" in self.tables():
                    return f"{ns}.{target}", None
        return target, None

    def report(self, target: str) -> dict[str, Any]:
        """{table, column, upstream, downstream, impact} of 'TABLE[.COLUMN]'; TableNotFound when the graph has
        no such table."""
        table, column = self.resolve(target)
        if table not in self.tables():
            raise TableNotFound(f"no lineage recorded for {table}; known: {', '.join(sorted(self.tables()))}")
        return {"table": table, "column": column, "upstream": self.upstream(table, column),
                "downstream": self.downstream(table, column), "impact": self.impact(table, column)}


# a run's status in the metadata catalog -> the OpenLineage event that ends it
_END_EVENT = {"ok": "COMPLETE", "partial": "COMPLETE", "failed": "FAIL", "interrupted": "ABORT"}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    return str(value)


def openlineage_events(store: MetadataStore, *, namespace: str = "eai") -> list[dict[str, Any]]:
    """OpenLineage RunEvents of the last run that built each output table: a START at the run's
    start and a COMPLETE (FAIL, ABORT) at its end, with column-level lineage facets on the output.

    Times are the run's own, from the metadata catalog (an edge recorded outside a known run uses
    the time it was recorded, with no START). A run still going has only its START."""
    by_dst: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in store.edges():
        by_dst[e["dst_table"]].append(e)
    events, run_rows = [], {}
    for dst, edges in sorted(by_dst.items()):
        fields: dict[str, Any] = defaultdict(lambda: {"inputFields": []})
        for e in edges:
            fields[e["dst_column"]]["inputFields"].append({
                "namespace": namespace, "name": e["src_table"], "field": e["src_column"],
                "transformations": [{"type": "DIRECT", "subtype": e["transform"].upper()}]})
        inputs = sorted({e["src_table"] for e in edges})
        latest = max(edges, key=lambda e: (_iso(e.get("recorded_at")) or "", e.get("id") or 0))
        run_id = latest.get("run_id")
        if run_id and run_id not in run_rows:
            run_rows[run_id] = store.run(run_id)
        run = run_rows.get(run_id) if run_id else None
        base = {"producer": PRODUCER, "schemaURL": SCHEMA_URL,
                "run": {"runId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}:{dst}"))},
                "job": {"namespace": namespace, "name": f"build {dst}"},
                "inputs": [{"namespace": namespace, "name": t} for t in inputs]}
        outputs = [{"namespace": namespace, "name": dst, "facets": {"columnLineage": {
            "_producer": PRODUCER,
            "_schemaURL": "https://openlineage.io/spec/facets/1-1-0/ColumnLineageDatasetFacet.json",
            "fields": dict(fields)}}}]
        if run is None:
            events.append({"eventType": "COMPLETE", "eventTime": _iso(latest.get("recorded_at")), **base,
                           "outputs": outputs})
            continue
        events.append({"eventType": "START", "eventTime": _iso(run["started_at"]), **base,
                       "outputs": [{"namespace": namespace, "name": dst}]})
        if run.get("finished_at") is not None:
            events.append({"eventType": _END_EVENT.get(run["status"], "COMPLETE"),
                           "eventTime": _iso(run["finished_at"]), **base, "outputs": outputs})
    return events
