"""The semantic layer: entities (keys, relationships), dimensions, measures and metrics in YAML,
compiled to SQL with joins along relationships of any depth (shortest join path).

Example::

    model = SemanticModel.load("configs/semantic/demo.yaml")
    q = model.compile(metrics=["revenue"], dimensions=["customers.country"], limit=10)
    q.sql   # WITH m_orders AS (SELECT customers.country AS country, SUM(...) ...) SELECT ...
"""
from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlglot import exp

from eai_ray.errors import ConfigError, UserError

Agg = Literal["sum", "count", "count_distinct", "avg", "min", "max"]
Grain = Literal["day", "week", "month", "quarter", "year"]
DIALECT = "duckdb"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Relationship(_M):
    to: str = Field(description="entity this one points to (many-to-one)")
    foreign_key: str
    references: str | None = Field(default=None, description="key column of `to` (default: its primary key)")


class Dimension(_M):
    name: str
    expr: str | None = Field(default=None, description="SQL over the entity's table (default: the name)")
    type: Literal["categorical", "time", "numeric"] = "categorical"
    description: str = ""
    synonyms: list[str] = []

    @property
    def sql(self) -> str:
        return self.expr or self.name


class Measure(_M):
    name: str
    expr: str = "*"
    agg: Agg = "sum"
    description: str = ""
    synonyms: list[str] = []


class Entity(_M):
    name: str
    table: str
    primary_key: str
    description: str = ""
    synonyms: list[str] = []
    time_dimension: str | None = None
    relationships: list[Relationship] = []
    dimensions: list[Dimension] = []
    measures: list[Measure] = []

    def dimension(self, name: str) -> Dimension | None:
        for d in self.dimensions:
            if d.name == name:
                return d
        return None


class Metric(_M):
    name: str
    description: str = ""
    synonyms: list[str] = []
    type: Literal["simple", "ratio", "derived"] = "simple"
    measure: str | None = Field(default=None, description="'entity.measure' for simple metrics")
    filter: str | None = Field(default=None, description="SQL condition over entity-qualified columns")
    numerator: str | None = None
    denominator: str | None = None
    expr: str | None = Field(default=None, description="derived: SQL over other metric names")

    @model_validator(mode="after")
    def _shape(self):
        need = {"simple": ("measure",), "ratio": ("numerator", "denominator"), "derived": ("expr",)}[self.type]
        missing = [f for f in need if not getattr(self, f)]
        if missing:
            raise ValueError(f"metric {self.name} ({self.type}) needs {', '.join(missing)}")
        return self


class _Spec(_M):
    name: str = "semantic"
    description: str = ""
    entities: list[Entity]
    metrics: list[Metric] = []


@dataclass(frozen=True)
class DimRef:
    """A dimension on the right-hand side of a filter: receipt_date > DimRef('lineitem.commit_date')."""
    ref: str


FilterOp = Literal["=", "!=", "<", "<=", ">", ">=", "in", "like", "between"]


@dataclass
class Filter:
    """A condition on a dimension ('entity.dim') or a metric (applied as HAVING)."""
    field: str
    op: FilterOp
    value: Any


@dataclass
class CompiledQuery:
    sql: str
    tables: list[str]
    metrics: list[str]
    dimensions: list[str]
    joins: list[tuple[str, str]] = field(default_factory=list)  # entity edges used
    warnings: list[str] = field(default_factory=list)


class SemanticModel:
    """Entities and metrics from YAML; `compile` turns a metric query into SQL."""

    def __init__(self, spec: _Spec, *, file: str | None = None) -> None:
        self.spec = spec
        self.file = file
        self.entities = {e.name: e for e in spec.entities}
        self.metrics = {m.name: m for m in spec.metrics}
        self._check()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> SemanticModel:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read semantic model: {exc}", file=str(path)) from None
        return cls.from_dict(data, file=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, file: str | None = None) -> SemanticModel:
        try:
            spec = _Spec.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise ConfigError(e["msg"], file=file, field=".".join(str(p) for p in e["loc"])) from None
        return cls(spec, file=file)

    def _check(self) -> None:
        for e in self.spec.entities:
            for r in e.relationships:
                if r.to not in self.entities:
                    raise ConfigError(f"entity {e.name} relates to unknown entity {r.to}", file=self.file,
                                      field=f"entities.{e.name}.relationships")
            if e.time_dimension and not e.dimension(e.time_dimension):
                raise ConfigError(f"time_dimension {e.time_dimension} is not a dimension of {e.name}",
                                  file=self.file, field=f"entities.{e.name}.time_dimension")
        for m in self.spec.metrics:
            for dep in self._simple_leaves(m.name):
                ent, _, meas = (self.metrics[dep].measure or "").partition(".")
                if ent not in self.entities or not any(x.name == meas for x in self.entities[ent].measures):
                    raise ConfigError(f"metric {dep} uses unknown measure {self.metrics[dep].measure}",
                                      file=self.file, field=f"metrics.{dep}.measure")

    # ------------------------------------------------------------------ catalog
    def with_aggregates(self, aggs: list[tuple[str, str, Agg]]) -> SemanticModel:
        """A copy with ad-hoc simple metrics, each (metric name, what, agg): `what` is a dimension
        ('entity.dim': "the earliest order date" is MIN over order_date, "how many distinct brands"
        COUNT(DISTINCT) over brand) or 'entity:SQL' over entity-qualified columns of entities that
        entity reaches ("days between order date and ship date"). The model itself is left as it is."""
        spec = self.spec.model_copy(deep=True)
        ents = {e.name: e for e in spec.entities}
        for name, what, agg in aggs:
            if name in self.metrics:
                continue
            if ":" in what:
                ent_name, expr = what.split(":", 1)
                label = name.replace("_", " ")
            else:
                ent, dim, _ = self._dim(what)
                ent_name, expr, label = ent.name, dim.sql, f"{agg.replace('_', ' ')} of {dim.name.replace('_', ' ')}"
            ents[ent_name].measures.append(Measure(name=f"_{name}", expr=expr, agg=agg))
            spec.metrics.append(Metric(name=name, measure=f"{ent_name}._{name}", description=label))
        return SemanticModel(spec, file=self.file)

    def dimension_refs(self) -> list[tuple[str, Entity, Dimension]]:
        return [(f"{e.name}.{d.name}", e, d) for e in self.spec.entities for d in e.dimensions]

    def tables(self) -> list[str]:
        return sorted({e.table for e in self.spec.entities})

    def base_entity(self, metric: str) -> str:
        leaves = self._simple_leaves(metric)
        return (self.metrics[leaves[0]].measure or "").split(".")[0]

    def _simple_leaves(self, metric: str, seen: frozenset = frozenset()) -> list[str]:
        if metric not in self.metrics:
            raise UserError(f"unknown metric {metric}; known: {', '.join(sorted(self.metrics))}")
        if metric in seen:
            raise ConfigError(f"metric {metric} refers to itself", file=self.file)
        m = self.metrics[metric]
        if m.type == "simple":
            return [metric]
        if m.type == "ratio":
            assert m.numerator is not None and m.denominator is not None  # Metric's validator requires them for this type
            return self._simple_leaves(m.numerator, seen | {metric}) + self._simple_leaves(m.denominator, seen | {metric})
        assert m.expr is not None  # Metric's validator requires them for this type
        deps = [c.name for c in sqlglot.parse_one(m.expr, read=DIALECT).find_all(exp.Column) if c.name in self.metrics]
        return [x for d in deps for x in self._simple_leaves(d, seen | {metric})]

    # ------------------------------------------------------------------ joins
    def _edges(self) -> dict[str, list[tuple[str, str, str, bool]]]:
        """entity -> [(other, this side's column, other side's column, many_to_one)]."""
        g: dict[str, list[tuple[str, str, str, bool]]] = {n: [] for n in self.entities}
        for e in self.spec.entities:
            for r in e.relationships:
                ref = r.references or self.entities[r.to].primary_key
                g[e.name].append((r.to, r.foreign_key, ref, True))
                g[r.to].append((e.name, ref, r.foreign_key, False))
        return g

    def join_path(self, start: str, goal: str) -> list[tuple[str, str, str, str, bool]]:
        """Shortest path start -> goal as (from, to, from_col, to_col, many_to_one) hops, any depth.
        Ties prefer many-to-one hops (no fan-out)."""
        if start == goal:
            return []
        g = self._edges()
        prev: dict[str, tuple[str, str, str, bool]] = {start: ("", "", "", True)}
        queue = deque([start])
        while queue:
            cur = queue.popleft()
            for nxt, a, b, m2o in sorted(g[cur], key=lambda x: (not x[3], x[0])):
                if nxt not in prev:
                    prev[nxt] = (cur, a, b, m2o)
                    queue.append(nxt)
        if goal not in prev:
            raise UserError(f"no relationship path from {start} to {goal}: add a relationship to the semantic model")
        path = []
        node = goal
        while node != start:
            p, a, b, m2o = prev[node]
            path.append((p, node, a, b, m2o))
            node = p
        return path[::-1]

    # ------------------------------------------------------------------ compile
    def compile(self, *, metrics: Sequence[str] = (), dimensions: Sequence[str] = (), filters: Sequence[Filter] = (),
                time_range: tuple[dt.date | None, dt.date | None] | None = None, time_dimension: str | None = None,
                order_by: Sequence[tuple[str, bool]] = (), limit: int | None = None) -> CompiledQuery:
        """SQL for metrics grouped by dimensions ('entity.dim' or 'entity.dim__grain').

        `filters` on dimensions become WHERE, on metrics HAVING; `time_range` [start, end) applies
        to `time_dimension` (default: the base entity's). `order_by` holds (field, descending).
        Without metrics: the distinct values of the dimensions.
        """
        metrics, dimensions = list(dict.fromkeys(metrics)), list(dict.fromkeys(dimensions))
        if not metrics and not dimensions:
            raise UserError("a query needs at least one metric or dimension")
        for m in metrics:
            self._simple_leaves(m)
        dim_cols = {d: self._dim_alias(d) for d in dimensions}
        dim_filters = [f for f in filters if f.field not in self.metrics]
        met_filters = [f for f in filters if f.field in self.metrics]
        warnings: list[str] = []
        joins_used: list[tuple[str, str]] = []
        tables: set[str] = set()
        # simple metrics grouped by base entity: one CTE each
        leaves = list(dict.fromkeys(x for m in metrics for x in self._simple_leaves(m)))
        groups: dict[str, list[str]] = {}
        for leaf in leaves:
            groups.setdefault((self.metrics[leaf].measure or "").split(".")[0], []).append(leaf)
        if not groups:  # dimensions only
            if not dimensions:  # derived metrics that name no other metric: no entity to read
                raise UserError("a query needs a metric over a measure or a dimension")
            groups = {self._dim_entity(dimensions[0]): []}
        ctes = []
        for base, leaf_names in groups.items():
            td = time_dimension or (f"{base}.{self.entities[base].time_dimension}"
                                    if self.entities[base].time_dimension else None)
            needed = {self._dim_entity(d) for d in dimensions} | {self._dim_entity(f.field) for f in dim_filters}
            needed |= {self._dim_entity(f.value.ref) for f in dim_filters if isinstance(f.value, DimRef)}
            if time_range and td:
                needed.add(self._dim_entity(td))
            for leaf in leaf_names:
                leaf_filter = self.metrics[leaf].filter
                if leaf_filter:
                    needed |= self._entities_in(leaf_filter)
                if self._measure(leaf).expr.strip() != "*":  # an expression over joined entities
                    needed |= self._entities_in(self._measure(leaf).expr)
            from_sql, used, fanout = self._from_clause(base, needed - {None})
            joins_used += used
            tables |= {self.entities[n].table for n in {base} | {x for e in used for x in e}}
            if fanout and any(self._measure(x).agg not in ("count_distinct", "min", "max") for x in leaf_names):
                warnings.append(f"joins from {base} fan out (one-to-many): sums and counts may repeat rows")
            selects = [f"{self._dim_sql(d)} AS {dim_cols[d]}" for d in dimensions]
            selects += [f"{self._agg_sql(leaf)} AS {leaf}" for leaf in leaf_names]
            where = [self._filter_sql(f) for f in dim_filters]
            if time_range and td:
                start, end = time_range
                col = self._dim_sql(td)
                if start:
                    where.append(f"{col} >= DATE '{start.isoformat()}'")
                if end:
                    where.append(f"{col} < DATE '{end.isoformat()}'")
            sql = f"SELECT {'DISTINCT ' if not leaf_names else ''}{', '.join(selects)} FROM {from_sql}"
            if where:
                sql += " WHERE " + " AND ".join(f"({w})" for w in where)
            if dimensions and leaf_names:
                sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dimensions)))
            ctes.append((f"m_{base}", sql))
        # final select over the CTEs
        dim_out = list(dim_cols.values())
        first = ctes[0][0]
        from_sql = first
        for name, _ in ctes[1:]:
            from_sql += (f" FULL OUTER JOIN {name} USING ({', '.join(dim_out)})" if dim_out else f" CROSS JOIN {name}")
        selects = [f"{d}" for d in dim_out] + [f"{self._metric_sql(m)} AS {m}" for m in metrics]
        sql = f"WITH {', '.join(f'{n} AS ({s})' for n, s in ctes)} SELECT {', '.join(selects)} FROM {from_sql}"
        having = [self._filter_sql(Filter(f.field, f.op, f.value), metric=True) for f in met_filters]
        if having:
            sql += " WHERE " + " AND ".join(having)
        order = []
        for fld, desc in order_by:
            col = fld if fld in metrics else dim_cols.get(fld) or fld
            order.append(f"{col} {'DESC' if desc else 'ASC'} NULLS LAST")
        if not order and dim_out:
            order = [f"{d} ASC NULLS LAST" for d in dim_out]
        if order:
            sql += " ORDER BY " + ", ".join(order)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        sql = sqlglot.transpile(sql, read=DIALECT, write=DIALECT)[0]
        return CompiledQuery(sql=sql, tables=sorted(tables), metrics=metrics, dimensions=dimensions,
                             joins=list(dict.fromkeys(joins_used)), warnings=warnings)

    # ------------------------------------------------------------------ pieces
    def _dim_entity(self, ref: str) -> str:
        ent = ref.split(".", 1)[0]
        if ent not in self.entities:
            raise UserError(f"unknown entity in {ref!r}; known: {', '.join(sorted(self.entities))}")
        return ent

    def _dim(self, ref: str) -> tuple[Entity, Dimension, str | None]:
        ent_name, _, rest = ref.partition(".")
        name, _, grain = rest.partition("__")
        ent = self.entities.get(ent_name)
        dim = ent.dimension(name) if ent else None
        if ent is None or dim is None:
            raise UserError(f"unknown dimension {ref!r}")
        if grain and grain not in ("day", "week", "month", "quarter", "year"):
            raise UserError(f"unknown time grain {grain!r} in {ref!r}")
        return ent, dim, grain or None

    def _dim_alias(self, ref: str) -> str:
        ent, dim, grain = self._dim(ref)
        return f"{dim.name}_{grain}" if grain else dim.name

    def _dim_sql(self, ref: str) -> str:
        ent, dim, grain = self._dim(ref)
        col = _qualify(dim.sql, ent.name)
        if grain == "year":
            return f"EXTRACT(YEAR FROM {col})"
        if grain:
            return f"CAST(DATE_TRUNC('{grain}', {col}) AS DATE)"
        return col

    def _measure(self, leaf: str) -> Measure:
        ent, _, meas = (self.metrics[leaf].measure or "").partition(".")
        return next(x for x in self.entities[ent].measures if x.name == meas)

    def _agg_sql(self, leaf: str) -> str:
        m = self.metrics[leaf]
        ent = (m.measure or "").split(".")[0]
        meas = self._measure(leaf)
        inner = "*" if meas.expr.strip() == "*" else _qualify(meas.expr, ent)
        if m.filter:
            inner = f"CASE WHEN {m.filter} THEN {'1' if inner == '*' else inner} END"
        if meas.agg == "count_distinct":
            return f"COUNT(DISTINCT {inner})"
        return f"{meas.agg.upper()}({inner})"

    def _metric_sql(self, name: str) -> str:
        m = self.metrics[name]
        if m.type == "simple":
            return name
        if m.type == "ratio":
            assert m.numerator is not None and m.denominator is not None  # Metric's validator requires them for this type
            return f"CAST({self._metric_sql(m.numerator)} AS DOUBLE) / NULLIF({self._metric_sql(m.denominator)}, 0)"
        assert m.expr is not None  # Metric's validator requires them for this type
        tree = sqlglot.parse_one(m.expr, read=DIALECT)
        for c in list(tree.find_all(exp.Column)):
            if c.name in self.metrics:
                c.replace(sqlglot.parse_one(f"({self._metric_sql(c.name)})", read=DIALECT))
        return tree.sql(dialect=DIALECT)

    def _entities_in(self, sql: str) -> set[str]:
        tree = sqlglot.parse_one(sql, read=DIALECT)
        return {c.table for c in tree.find_all(exp.Column) if c.table in self.entities}

    def _from_clause(self, base: str, needed: set[str]) -> tuple[str, list[tuple[str, str]], bool]:
        joined = {base}
        parts = [f"{self.entities[base].table} AS {base}"]
        used: list[tuple[str, str]] = []
        fanout = False
        for goal in sorted(needed, key=lambda g: (len(self.join_path(base, g)), g)):
            for frm, to, a, b, m2o in self.join_path(base, goal):
                if to in joined:
                    continue
                joined.add(to)
                used.append((frm, to))
                fanout |= not m2o
                parts.append(f"JOIN {self.entities[to].table} AS {to} ON {frm}.{a} = {to}.{b}")
        return " ".join(parts), used, fanout

    def _filter_sql(self, f: Filter, *, metric: bool = False) -> str:
        col = f.field if metric else self._dim_sql(f.field)
        def lit(v):
            if isinstance(v, DimRef):
                return self._dim_sql(v.ref)
            if isinstance(v, bool):
                return "TRUE" if v else "FALSE"
            if isinstance(v, (int, float)):
                return repr(v)
            if isinstance(v, dt.date):
                return f"DATE '{v.isoformat()}'"
            return "'" + str(v).replace("'", "''") + "'"
        if f.op == "in":
            return f"{col} IN ({', '.join(lit(v) for v in f.value)})"
        if f.op == "between":
            return f"{col} BETWEEN {lit(f.value[0])} AND {lit(f.value[1])}"
        if f.op == "like":
            return f"{col} ILIKE {lit(f.value)}"
        return f"{col} {'<>' if f.op == '!=' else f.op} {lit(f.value)}"


def _qualify(expr: str, alias: str) -> str:
    """Prefix the bare columns of an entity expression with the entity alias."""
    tree = sqlglot.parse_one(expr, read=DIALECT)
    for c in tree.find_all(exp.Column):
        if not c.table:
            c.set("table", exp.to_identifier(alias))
    return tree.sql(dialect=DIALECT)
