"""The metadata catalog: runs, versioned schemas, lineage edges and quality results.

SQLite (embedded default) or PostgreSQL, through SQLAlchemy Core. Checkpoints are
NOT kept here: they live in the Iceberg snapshot summary of the data they cover,
so data and position commit atomically.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

_md = sa.MetaData()

runs = sa.Table(
    "eai_runs", _md,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("summary", sa.Text),
)

schema_versions = sa.Table(
    "eai_schema_versions", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(300), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("schema_json", sa.Text, nullable=False),
    sa.Column("changes", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

lineage_edges = sa.Table(
    "eai_lineage", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("src_table", sa.String(300), nullable=False, index=True),
    sa.Column("src_column", sa.String(300), nullable=False),
    sa.Column("dst_table", sa.String(300), nullable=False, index=True),
    sa.Column("dst_column", sa.String(300), nullable=False),
    sa.Column("transform", sa.String(100), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("src_table", "src_column", "dst_table", "dst_column", name="uq_eai_lineage_edge"),
)

quality_results = sa.Table(
    "eai_quality", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("table_name", sa.String(300), nullable=False, index=True),
    sa.Column("dimension", sa.String(50), nullable=False),
    sa.Column("metric", sa.String(200), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("details", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class MetadataStore:
    """Typed access to the metadata tables.

    Example::

        store = MetadataStore("sqlite:///.eai/metadata.db")
        store.record_schema("silver.customers", {"id": "int64"}, run_id="r1")
    """

    def __init__(self, uri: str) -> None:
        from eai_ray.errors import ConfigError
        from eai_ray.storage.catalog import shown_uri

        try:
            if uri.startswith("sqlite:///"):
                Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(uri, future=True)
            _md.create_all(self.engine)
        except Exception as exc:  # noqa: BLE001 - a driver's many error types: one clear message
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ConfigError(f"cannot open the metadata catalog at {shown_uri(uri)}: {detail}",
                              field="metadata_uri", expected="a reachable database (check host, port, "
                              "database and credentials)") from None

    @classmethod
    def for_pipeline(cls, cfg) -> MetadataStore:
        from eai_ray.config import with_secrets

        return cls(with_secrets(cfg.metadata_uri) or f"sqlite:///{cfg.state_path / 'metadata.db'}")

    # ------------------------------------------------------------------ runs
    def start_run(self, run_id: str, pipeline: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.insert().values(run_id=run_id, pipeline=pipeline, started_at=_now(), status="running"))

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(
                finished_at=_now(), status=status, summary=json.dumps(summary, default=str)))

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run's row (started_at, finished_at, status, summary), or None."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    # ------------------------------------------------------------------ schemas
    def latest_schema(self, table: str) -> tuple[int, dict[str, Any]] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(schema_versions.c.version, schema_versions.c.schema_json)
                            .where(schema_versions.c.table_name == table)
                            .order_by(schema_versions.c.version.desc()).limit(1)).first()
        return (row[0], json.loads(row[1])) if row else None

    def record_schema(self, table: str, schema: dict[str, Any], *, run_id: str | None = None,
                      changes: list[dict[str, Any]] | None = None) -> int:
        """Store a new version when the schema differs from the latest; returns the current version."""
        latest = self.latest_schema(table)
        if latest and latest[1] == schema:
            return latest[0]
        version = (latest[0] + 1) if latest else 1
        with self.engine.begin() as c:
            c.execute(schema_versions.insert().values(
                table_name=table, version=version, schema_json=json.dumps(schema, sort_keys=True),
                changes=json.dumps(changes or []), run_id=run_id, recorded_at=_now()))
        return version

    def schema_history(self, table: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(schema_versions).where(schema_versions.c.table_name == table)
                             .order_by(schema_versions.c.version)).mappings().all()
        return [{**dict(r), "schema_json": json.loads(r["schema_json"]), "changes": json.loads(r["changes"] or "[]")}
                for r in rows]

    # ------------------------------------------------------------------ lineage
    def record_edges(self, edges: Iterable[tuple[str, str, str, str, str]], *, run_id: str | None = None) -> int:
        """Upsert (src_table, src_column, dst_table, dst_column, transform) edges."""
        edges = list(dict.fromkeys(edges))
        if not edges:
            return 0
        now = _now()
        with self.engine.begin() as c:
            for src_t, src_c, dst_t, dst_c, how in edges:
                cond = sa.and_(lineage_edges.c.src_table == src_t, lineage_edges.c.src_column == src_c,
                               lineage_edges.c.dst_table == dst_t, lineage_edges.c.dst_column == dst_c)
                res = c.execute(lineage_edges.update().where(cond).values(transform=how, run_id=run_id, recorded_at=now))
                if res.rowcount == 0:
                    c.execute(lineage_edges.insert().values(src_table=src_t, src_column=src_c, dst_table=dst_t,
                                                            dst_column=dst_c, transform=how, run_id=run_id,
                                                            recorded_at=now))
        return len(edges)

    def edges(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(sa.select(lineage_edges)).mappings().all()]

    # ------------------------------------------------------------------ quality
    def record_quality(self, run_id: str, table: str, results: list[dict[str, Any]]) -> None:
        if not results:
            return
        now = _now()
        with self.engine.begin() as c:
            c.execute(quality_results.insert(), [
                {"run_id": run_id, "table_name": table, "dimension": r["dimension"], "metric": r["metric"],
                 "value": r.get("value"), "details": json.dumps(r.get("details") or {}, default=str),
                 "recorded_at": now} for r in results])

    def quality(self, table: str, *, runs_back: int = 5) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            run_ids = [r[0] for r in c.execute(
                sa.select(quality_results.c.run_id, sa.func.max(quality_results.c.recorded_at).label("t"))
                .where(quality_results.c.table_name == table).group_by(quality_results.c.run_id)
                .order_by(sa.desc("t")).limit(runs_back)).all()]
            rows = c.execute(sa.select(quality_results).where(quality_results.c.table_name == table)
                             .where(quality_results.c.run_id.in_(run_ids))
                             .order_by(quality_results.c.recorded_at.desc(), quality_results.c.id)).mappings().all()
        return [{**dict(r), "details": json.loads(r["details"] or "{}")} for r in rows]
