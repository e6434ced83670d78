"""The human review queue for schema mappings and the mappings it taught us.

Same database as the metadata catalog (SQLite or PostgreSQL through SQLAlchemy). A mapping under
the confidence threshold is queued as *pending*; a reviewer approves, rejects or fixes it
(`eai review ...`). Approved and fixed answers are *learned*: later matches use them as exact
matches and as extra training pairs, and they drive the silver `columns:` (`source:` renames).

Example::

    store = ReviewStore("sqlite:///.eai/metadata.db")
    store.enqueue([{"source": "cust_nm", "target": "name", "confidence": 0.41, "rationale": "..."}])
    store.approve(store.list("pending")[0]["id"])
"""
from __future__ import annotations

import builtins
import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from eai_ray.errors import UserError

Status = Literal["pending", "approved", "rejected", "fixed"]
_md = sa.MetaData()

reviews = sa.Table(
    "eai_mapping_reviews", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_table", sa.String(300), nullable=False, default=""),
    sa.Column("source_column", sa.String(300), nullable=False),
    sa.Column("target_table", sa.String(300), nullable=False, default=""),
    sa.Column("target_column", sa.String(300)),
    sa.Column("confidence", sa.Float),
    sa.Column("rationale", sa.Text),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("payload", sa.Text),  # samples and types of both columns, for learning
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("decided_by", sa.String(200)),
)

learned = sa.Table(
    "eai_learned_mappings", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_table", sa.String(300), nullable=False, default=""),
    sa.Column("source_column", sa.String(300), nullable=False),
    sa.Column("target_table", sa.String(300), nullable=False, default=""),
    sa.Column("target_column", sa.String(300)),  # NULL: the reviewer said "no match" (a rejection)
    sa.Column("verdict", sa.String(20), nullable=False),  # approved | fixed | rejected
    sa.Column("payload", sa.Text),
    sa.Column("review_id", sa.Integer),
    sa.Column("learned_at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ReviewStore:
    """Pending mapping reviews and learned mappings; pass a URI or an existing SQLAlchemy engine."""

    def __init__(self, uri_or_engine: str | sa.engine.Engine) -> None:
        if isinstance(uri_or_engine, str):
            if uri_or_engine.startswith("sqlite:///"):
                Path(uri_or_engine[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(uri_or_engine, future=True)
        else:
            self.engine = uri_or_engine
        _md.create_all(self.engine)

    @classmethod
    def for_pipeline(cls, cfg) -> ReviewStore:
        from eai_ray.storage.metadata import MetadataStore
        return cls(MetadataStore.for_pipeline(cfg).engine)

    # ------------------------------------------------------------------ queue
    def enqueue(self, items: list[dict[str, Any]], *, source_table: str = "", target_table: str = "") -> list[int]:
        """Queue mappings for review; a pending item for the same source column is replaced."""
        ids = []
        with self.engine.begin() as c:
            for it in items:
                st, tt = it.get("source_table", source_table) or "", it.get("target_table", target_table) or ""
                c.execute(reviews.delete().where(sa.and_(
                    reviews.c.status == "pending", reviews.c.source_table == st, reviews.c.target_table == tt,
                    reviews.c.source_column == it["source"])))
                res = c.execute(reviews.insert().values(
                    source_table=st, source_column=it["source"], target_table=tt, target_column=it.get("target"),
                    confidence=it.get("confidence"), rationale=it.get("rationale"), status="pending",
                    payload=json.dumps(it.get("payload") or {}, default=str), created_at=_now()))
                key = res.inserted_primary_key
                assert key is not None  # an INSERT
                ids.append(int(key[0]))
        return ids

    def list(self, status: Status | Literal["all"] = "pending", *, limit: int = 200) -> list[dict[str, Any]]:
        q = sa.select(reviews).order_by(reviews.c.id).limit(limit)
        if status != "all":
            q = q.where(reviews.c.status == status)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        return [{**dict(r), "payload": json.loads(r["payload"] or "{}")} for r in rows]

    def get(self, review_id: int) -> dict[str, Any]:
        with self.engine.connect() as c:
            row = c.execute(sa.select(reviews).where(reviews.c.id == review_id)).mappings().first()
        if row is None:
            raise UserError(f"no review {review_id}; see `eai review list`")
        return {**dict(row), "payload": json.loads(row["payload"] or "{}")}

    def approve(self, review_id: int, *, by: str | None = None) -> dict[str, Any]:
        item = self.get(review_id)
        if not item["target_column"]:
            raise UserError(f"review {review_id} proposes no target column: use `eai review fix {review_id} COLUMN`")
        return self._decide(item, "approved", item["target_column"], by)

    def reject(self, review_id: int, *, by: str | None = None) -> dict[str, Any]:
        return self._decide(self.get(review_id), "rejected", None, by)

    def fix(self, review_id: int, target_column: str, *, by: str | None = None) -> dict[str, Any]:
        return self._decide(self.get(review_id), "fixed", target_column, by)

    def _decide(self, item: dict[str, Any], verdict: str, target: str | None, by: str | None) -> dict[str, Any]:
        if item["status"] != "pending":
            raise UserError(f"review {item['id']} is already {item['status']}")
        now = _now()
        with self.engine.begin() as c:
            c.execute(reviews.update().where(reviews.c.id == item["id"]).values(
                status=verdict, decided_at=now, decided_by=by,
                target_column=target if verdict == "fixed" else item["target_column"]))
            payload = dict(item["payload"])
            if verdict == "rejected":
                payload["rejected_target"] = item["target_column"]
            c.execute(learned.insert().values(
                source_table=item["source_table"], source_column=item["source_column"],
                target_table=item["target_table"], target_column=target, verdict=verdict,
                payload=json.dumps(payload, default=str), review_id=item["id"], learned_at=now))
        return {**item, "status": verdict, "target_column": target if verdict != "rejected" else item["target_column"]}

    # ------------------------------------------------------------------ learned
    def remember(self, source: str, target: str | None, *, source_table: str = "", target_table: str = "",
                 verdict: str = "approved", payload: dict[str, Any] | None = None) -> None:
        """Record a decision directly (e.g. from an API call), without a queued review."""
        with self.engine.begin() as c:
            c.execute(learned.insert().values(source_table=source_table, source_column=source, target_table=target_table,
                                              target_column=target, verdict=verdict,
                                              payload=json.dumps(payload or {}, default=str), learned_at=_now()))

    # builtins.list: in the class body `list` is the method above
    def learned(self, *, target_table: str | None = None) -> builtins.list[dict[str, Any]]:
        """Learned decisions, newest last; the latest decision for a (source, target table) wins."""
        q = sa.select(learned).order_by(learned.c.id)
        if target_table is not None:
            q = q.where(learned.c.target_table == target_table)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        return [{**dict(r), "payload": json.loads(r["payload"] or "{}")} for r in rows]

    def training_pairs(self) -> builtins.list[dict[str, Any]]:
        """Approved/fixed mappings in the scorer's training format."""
        out = []
        for r in self.learned():
            if r["verdict"] in ("approved", "fixed") and r["target_column"]:
                p = r["payload"]
                out.append({"source": r["source_column"], "target": r["target_column"],
                            "target_table": r["target_table"], "source_samples": p.get("source_samples"),
                            "target_samples": p.get("target_samples"), "source_type": p.get("source_type"),
                            "target_type": p.get("target_type")})
        return out

    def silver_columns(self, target_table: str) -> dict[str, dict[str, Any]]:
        """The approved mappings of a silver table as its `columns:` block: {target: {type, source}}."""
        cols: dict[str, dict[str, Any]] = {}
        for r in self.learned(target_table=target_table):
            if r["verdict"] in ("approved", "fixed") and r["target_column"]:
                spec: dict[str, Any] = {"source": r["source_column"]}
                ttype = _pipeline_type((r["payload"] or {}).get("target_type"))
                if ttype:
                    spec["type"] = ttype
                cols[r["target_column"]] = spec
        return cols


def _pipeline_type(t: str | None) -> str | None:
    """A SQL/Arrow type name as a pipeline column type (config.ColumnSpec), or None when unsure."""
    t = (t or "").strip().lower()
    if not t:
        return None
    if t.startswith(("decimal", "numeric")):
        return t.replace("numeric", "decimal").replace(" ", "") if "(" in t else "decimal(18,2)"
    table = [("timestamp with time zone", "timestamptz"), ("timestamptz", "timestamptz"), ("timestamp", "timestamp"),
             ("datetime", "timestamp"), ("date", "date"), ("bool", "bool"), ("bigint", "int64"), ("int64", "int64"),
             ("smallint", "int32"), ("int", "int64"), ("double", "float64"), ("float", "float64"), ("real", "float64"),
             ("uuid", "uuid"), ("json", "json"), ("char", "string"), ("text", "string"), ("string", "string")]
    for key, out in table:
        if key in t:
            return out
    return None
