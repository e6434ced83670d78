"""Writes change-event micro-batches to Iceberg, exactly once.

Per captured table:
- ``bronze.<source>_<table>``: the change log, every event once (op, position, commit LSN/GTID,
  transaction id, commit time, schema version, the row's values as source text);
- ``silver.<name>``: the current state by key, MERGEd with sequence-by = the event position
  (a late or replayed event never overwrites a newer one); deletes remove the row or leave a
  tombstone (``_eai_deleted``), by configuration;
- ``quarantine.<name>``: rows whose values break the silver schema, with the reason;
- ``silver.<name>_history`` (optional): SCD type 2 versions (valid from/to, current flag).
Undecodable messages and events for unknown tables go to ``quarantine.<source>_cdc``.

Exactly once: every commit writes ``eai.cdc_position`` (the highest event position the table
now holds) and ``eai.cdc_resume`` (where the source can resume) into the same snapshot as the
data. On restart each table skips events at or below its own position, so a batch that was
half committed when the process died is completed, never doubled.

Example::

    sink = CdcSink(catalog, source="shop", silver={"orders": spec}, deletes="remove")
    sink.prepare(source.tables())
    sink.write(events, bad=[], end=end_of(commit_lsn), resume="16B3790")
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Any, Literal, cast

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from eai_ray.coerce import coerce_column
from eai_ray.config import SilverTable
from eai_ray.ingestion.cdc.events import ZERO, BadEvent, ChangeEvent, SnapshotChunk, TableSpec
from eai_ray.ingestion.cdc.trace import enabled as trace_enabled
from eai_ray.ingestion.cdc.trace import trace
from eai_ray.processing.silver import QUARANTINE_SCHEMA, transform
from eai_ray.storage import tables

POSITION = "_eai_position"
DELETED = "_eai_deleted"
POS_PROP = "eai.cdc_position"
RESUME_PROP = "eai.cdc_resume"

META = [("_eai_op", pa.string()), (POSITION, pa.string()), ("_eai_commit", pa.int64()), ("_eai_tx", pa.string()),
        ("_eai_commit_time", pa.timestamp("us", tz="UTC")), ("_eai_schema_version", pa.int32()),
        ("_eai_unchanged", pa.string())]

REJECT_SCHEMA = pa.schema([("_eai_reason", pa.string()), ("_eai_table", pa.string()), ("_eai_record", pa.string()),
                           (POSITION, pa.string()), ("_eai_quarantined_at", pa.timestamp("us", tz="UTC"))])


@dataclass
class WriteStats:
    events: int = 0
    bronze_rows: int = 0
    silver_changes: int = 0
    quarantined: int = 0
    rejected: int = 0
    skipped: int = 0  # already committed before a restart
    tables: dict[str, int] = field(default_factory=dict)


_TEXT_TYPES = {str, type(None)}


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class CdcSink:
    """Change events -> bronze change log + silver current state (+ quarantine, SCD2 history)."""

    def __init__(self, catalog: Catalog, *, source: str, silver: dict[str, SilverTable] | None = None,
                 deletes: Literal["remove", "tombstone"] = "remove", scd2: bool = False, run_id: str = "cdc",
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self.catalog = catalog
        self.source = source
        self.silver_specs = dict(silver or {})
        self.deletes = deletes
        self.scd2 = scd2
        self.run_id = run_id
        self.now = now
        self.specs: dict[str, TableSpec] = {}
        self._wm: dict[str, str] = {}  # table name -> committed position (cache of eai.cdc_position)
        self._schemas: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ names
    def bronze(self, t: str) -> str:
        return f"bronze.{self.source}_{t}"

    def spec_for(self, t: str) -> SilverTable:
        spec = self.silver_specs.get(t)
        if spec is None:
            spec = SilverTable(name=f"{self.source}_{t}", source=f"{self.source}.{t}", primary_key=self.specs[t].key)
            self.silver_specs[t] = spec
        return spec

    def silver(self, t: str) -> str:
        return f"silver.{self.spec_for(t).name}"

    def quarantine(self, t: str) -> str:
        return f"quarantine.{self.spec_for(t).name}"

    def history(self, t: str) -> str:
        return f"silver.{self.spec_for(t).name}_history"

    @property
    def rejects(self) -> str:
        return f"quarantine.{self.source}_cdc"

    def keys(self, t: str) -> list[str]:
        return list(self.spec_for(t).primary_key or self.specs[t].key)

    # ------------------------------------------------------------------ positions
    def prepare(self, specs: list[TableSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self._wm.clear()
        self._schemas.clear()

    def refresh(self, specs: list[TableSpec]) -> None:
        """New source column types (a source schema change); positions stay."""
        self.specs = {s.name: s for s in specs}

    def watermark(self, name: str) -> str:
        if name not in self._wm:
            pos = None
            if tables.exists(self.catalog, name):
                pos = tables.last_property(tables.load(self.catalog, name), POS_PROP)
            self._wm[name] = pos or ZERO
        return self._wm[name]

    def resume_of(self, name: str) -> str | None:
        if not tables.exists(self.catalog, name):
            return None
        return tables.last_property(tables.load(self.catalog, name), RESUME_PROP)

    def needs_snapshot(self) -> list[str]:
        """Tables whose silver never completed a snapshot (no position committed)."""
        return [t for t in self.specs if self.watermark(self.silver(t)) == ZERO]

    def targets(self, t: str) -> list[str]:
        out = [self.bronze(t), self.silver(t), self.quarantine(t)]
        return out + [self.history(t)] if self.scd2 else out

    def resume_point(self, *, fresh: bool = False) -> tuple[str, str | None]:
        """(lowest committed position, its resume token) over every target table: where to read from.
        `fresh`: re-read the tables (another process writes them)."""
        if fresh:
            self._wm.clear()
        best: tuple[str, str | None] | None = None
        for t in self.specs:
            for name in (self.bronze(t), self.silver(t)):
                pos = self.watermark(name)
                if best is None or pos < best[0]:
                    best = (pos, self.resume_of(name) if pos != ZERO else None)
        return best or (ZERO, None)

    def _props(self, pos: str, resume: str | None) -> dict[str, str]:
        props = {POS_PROP: pos}
        if resume is not None:
            props[RESUME_PROP] = resume
        return props

    def _committed(self, name: str, pos: str) -> None:
        self._wm[name] = max(pos, self._wm.get(name, ZERO))

    # ------------------------------------------------------------------ snapshot
    def write_snapshot(self, chunk: SnapshotChunk, *, resume: str | None = None) -> WriteStats:
        """Replace silver with a consistent snapshot of one table; bronze logs each row as op 'r'."""
        t = chunk.table
        rows = chunk.rows
        n = rows.num_rows
        meta = {"_eai_op": pa.array(["r"] * n, pa.string()),
                POSITION: pa.array([chunk.position] * n, pa.string()),
                "_eai_commit": pa.array([int(chunk.position[:16], 16)] * n, pa.int64()),
                "_eai_tx": pa.nulls(n, pa.string()),
                "_eai_commit_time": pa.array([self.now()] * n, pa.timestamp("us", tz="UTC")),
                "_eai_schema_version": pa.array([1] * n, pa.int32()),
                "_eai_unchanged": pa.nulls(n, pa.string())}
        bronze = pa.table({**meta, **{c: rows.column(c).cast(pa.string()) for c in rows.column_names}})
        props = self._props(chunk.position, resume)
        stats = WriteStats(events=n, bronze_rows=n)
        self._append(self.bronze(t), bronze, props)
        good, quarantine = self._typed(t, bronze)
        stats.quarantined = quarantine.num_rows
        self._quarantine(t, quarantine, props, chunk.position)
        silver = self.silver(t)
        good = self._with_meta(good, bronze, deleted=False)
        tables.evolve(self.catalog, silver, good.schema)
        tables.overwrite(self.catalog, silver, good, run_id=self.run_id, properties=props)
        self._committed(silver, chunk.position)
        if self.scd2:
            hist = self._history_rows(t, good, bronze)
            tables.evolve(self.catalog, self.history(t), hist.schema)
            tables.overwrite(self.catalog, self.history(t), hist, run_id=self.run_id, properties=props)
            self._committed(self.history(t), chunk.position)
        stats.silver_changes = good.num_rows
        return stats

    # ------------------------------------------------------------------ stream batches
    def write(self, events: list[ChangeEvent], *, bad: Sequence[BadEvent] = (), end: str,
              resume: str | None) -> WriteStats:
        """Commit one micro-batch (whole transactions) covering every event up to position `end`."""
        stats = WriteStats(events=len(events))
        props = self._props(end, resume)
        by_table: dict[str, list[ChangeEvent]] = {}
        for e in events:
            by_table.setdefault(e.table, []).append(e)
        for t, evs in by_table.items():
            if t not in self.specs:
                bad = list(bad) + [BadEvent(f"event for unknown table {t}", str(e.values()), e.position, t)
                                   for e in evs]
                continue
            stats.tables[t] = len(evs)
            self._write_table(t, evs, end, props, stats)
        if bad:
            wm = self.watermark(self.rejects)
            fresh = [b for b in bad if b.position > wm]
            stats.skipped += len(bad) - len(fresh)
            if fresh:
                now = self.now()
                rej = pa.table({"_eai_reason": [b.reason for b in fresh], "_eai_table": [b.table for b in fresh],
                                "_eai_record": [b.raw for b in fresh], POSITION: [b.position for b in fresh],
                                "_eai_quarantined_at": [now] * len(fresh)}, schema=REJECT_SCHEMA)
                stats.rejected = self._append_above(self.rejects, rej, props)
        return stats

    def _write_table(self, t: str, evs: list[ChangeEvent], end: str, props: dict, stats: WriteStats) -> None:
        bname = self.bronze(t)
        wm = self.watermark(bname)
        rows = self._bronze_rows(t, evs)  # once per batch: bronze and the silver upserts are cut from it
        fresh_n = sum(1 for e in evs if e.position > wm)
        stats.skipped += len(evs) - fresh_n
        if fresh_n:
            bronze = rows if fresh_n == len(evs) else rows.filter(pc.greater(rows.column(POSITION), pa.scalar(wm)))
            added = self._append_above(bname, bronze, props)
            stats.bronze_rows += added
            stats.skipped += bronze.num_rows - added
        swm = self.watermark(self.silver(t))
        if self.scd2:
            swm = min(swm, self.watermark(self.history(t)))
        todo = [e for e in evs if e.position > swm]
        # a TRUNCATE splits the batch: changes before it, the truncate, changes after it
        segment: list[ChangeEvent] = []
        for i, e in enumerate(todo):
            if e.op == "t":
                if segment:
                    self._apply(t, segment, {**props, POS_PROP: segment[-1].position}, stats, rows)
                    segment = []
                self._truncate(t, e, {**props, POS_PROP: e.position} if i < len(todo) - 1 else props)
            else:
                segment.append(e)
        if segment:
            self._apply(t, segment, props, stats, rows)

    def _bronze_rows(self, t: str, evs: list[ChangeEvent]) -> pa.Table:
        cols = list(self.specs[t].types)
        seen = set(cols)
        vals = [{} if e.op == "t" else e.after if e.after is not None else e.before if e.before is not None
                else e.key for e in evs]
        if set().union(*vals) - seen:  # a column the catalog did not list (rare): keep first-seen order
            for v in vals:
                for c in v:
                    if c not in seen:
                        seen.add(c)
                        cols.append(c)
        # column-wise through C-level map/attrgetter: this runs for every change event
        get = {a: list(map(attrgetter(a), evs)) for a in ("op", "position", "commit", "tx_id", "commit_time",
                                                          "schema_version", "unchanged")}
        data: dict[str, Any] = {
            "_eai_op": pa.array(get["op"], pa.string()),
            POSITION: pa.array(get["position"], pa.string()),
            "_eai_commit": pa.array(get["commit"], pa.int64()),
            "_eai_tx": pa.array(get["tx_id"], pa.string()),
            "_eai_commit_time": pa.array(get["commit_time"], pa.timestamp("us", tz="UTC")),
            "_eai_schema_version": pa.array(get["schema_version"], pa.int32()),
            "_eai_unchanged": pa.array([",".join(u) if u else None for u in get["unchanged"]], pa.string()),
        }
        for c in cols:
            raw = list(map(dict.get, vals, repeat(c)))
            if set(map(type, raw)) <= _TEXT_TYPES:  # pgoutput sends text already
                data[c] = pa.array(raw, pa.string())
            else:  # binlog values: ints, decimals, datetimes, bytes
                data[c] = pa.array([_text(v) for v in raw], pa.string())
        return pa.table(data)

    def _typed(self, t: str, bronze: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(typed rows in bronze order, quarantine rows) via the silver stage's coercion and rules."""
        spec = self.spec_for(t)
        # no dedup here (the merge keeps the latest by position); keys stay NOT NULL by rule
        plain = spec.model_copy(update={"primary_key": [], "sequence_by": None})
        res = transform(bronze, plain, source_types=self.specs[t].types, run_id=self.run_id, source=self.source,
                        now=self.now())
        return res.good, res.quarantine

    def _with_meta(self, good: pa.Table, bronze: pa.Table, *, deleted: bool | None, quarantine: pa.Table | None = None):
        kept = bronze
        if quarantine is not None and quarantine.num_rows:
            bad = pa.array(sorted(set(quarantine.column(POSITION).to_pylist())), pa.string())
            kept = bronze.filter(pc.invert(pc.is_in(bronze.column(POSITION), value_set=bad)))
        out = good.append_column(POSITION, kept.column(POSITION))
        if self.deletes == "tombstone" or deleted is None:
            out = out.append_column(DELETED, pa.array([bool(deleted)] * out.num_rows, pa.bool_()))
        return out

    def _quarantine(self, t: str, quarantine: pa.Table, props: dict, pos: str) -> None:
        name = self.quarantine(t)
        if quarantine.num_rows:
            wm = self.watermark(name)
            quarantine = quarantine.filter(pc.greater(quarantine.column(POSITION), pa.scalar(wm)))
        if quarantine.num_rows:
            self._append_above(name, quarantine.cast(QUARANTINE_SCHEMA), props)

    def _apply(self, t: str, evs: list[ChangeEvent], props: dict, stats: WriteStats,
               rows: pa.Table | None = None) -> None:
        keys = self.keys(t)
        spec_types = self._silver_types(t)
        upserts = [e for e in evs if e.op != "d"]
        deletes = [e for e in evs if e.op == "d"]
        parts = []
        quarantine = pa.table({f.name: pa.array([], f.type) for f in QUARANTINE_SCHEMA})
        if upserts:
            if rows is not None and len(upserts) == rows.num_rows:
                bronze = rows
            elif rows is not None:  # the batch's rows of these upserts, in order
                want = pa.array([e.position for e in upserts], pa.string())
                bronze = rows.filter(pc.is_in(rows.column(POSITION), value_set=want))
            else:
                bronze = self._bronze_rows(t, upserts)
            good, quarantine = self._typed(t, bronze)
            good = self._with_meta(good, bronze, deleted=False, quarantine=quarantine)
            if any(e.unchanged for e in upserts):
                good = self._fill_unchanged(t, good, bronze, quarantine)
            parts.append(good)
        if deletes:
            cols = {}
            for k in keys:
                raw = pa.array([_text(e.key.get(k)) for e in deletes], pa.string())
                cols[k] = coerce_column(raw, spec_types[k])[0] if k in spec_types else raw
            d = pa.table(cols).append_column(POSITION, pa.array([e.position for e in deletes], pa.string()))
            d = d.append_column(DELETED, pa.array([True] * len(deletes), pa.bool_()))
            parts.append(d)
        quarantine_pos = props[POS_PROP]
        self._quarantine(t, quarantine, props, quarantine_pos)
        self._committed(self.quarantine(t), props[POS_PROP])
        stats.quarantined += quarantine.num_rows
        if not parts:
            return
        changes = pl.concat([cast(pl.DataFrame, pl.from_arrow(p)) for p in parts], how="diagonal_relaxed").to_arrow()
        if self.scd2:
            hwm = self.watermark(self.history(t))
            hist = changes.filter(pc.greater(changes.column(POSITION), pa.scalar(hwm)))
        # each table skips what it already holds (a crash may have come between two commits)
        changes = changes.filter(pc.greater(changes.column(POSITION), pa.scalar(self.watermark(self.silver(t)))))
        silver = self.silver(t)
        schema_src = changes.drop_columns([DELETED]) if self.deletes == "remove" and DELETED in changes.column_names \
            else changes
        self._evolve(silver, schema_src.schema)
        if changes.num_rows:
            tables.merge(self.catalog, silver, changes, keys=keys, sequence_by=POSITION,
                         delete_flag=DELETED if self.deletes == "remove" else None, run_id=self.run_id,
                         properties=props)
            self._committed(silver, props[POS_PROP])
            stats.silver_changes += changes.num_rows
        if self.scd2 and hist.num_rows:
            self._history_merge(t, hist, evs, props)

    def _silver_types(self, t: str) -> dict[str, pa.DataType]:
        from eai_ray.processing.silver import target_columns
        return {name: typ for name, (_src, typ, _n) in target_columns(self.spec_for(t), self.specs[t].types).items()}

    def _evolve(self, name: str, schema: pa.Schema) -> None:
        sig = tuple(f"{f.name}:{f.type}" for f in schema)
        if self._schemas.get(name) != sig:
            tables.evolve(self.catalog, name, schema)
            self._schemas[name] = sig

    def _append(self, name: str, data: pa.Table, props: dict) -> None:
        self._evolve(name, data.schema)
        tables.append(self.catalog, name, data, run_id=self.run_id, properties=props)
        self._committed(name, props[POS_PROP])

    def _append_above(self, name: str, rows: pa.Table, props: dict) -> int:
        """Append the rows above the position table `name` records in the snapshot the append goes on
        top of; returns how many were appended.

        The position cached in this sink (`watermark`) is only this writer's view: a second writer of
        the same tables (seen: a Ray actor whose kill arrived while its worker was being leased lives
        on beside its restarted instance, both consuming) commits in between unseen, and a plain
        append would then add its rows again (the commit retry appends on top of the other writer's
        snapshot). Here the filter is redone against each attempt's snapshot and the commit asserts
        that snapshot is still current, so a position is appended at most once whoever writes.
        """
        kept = 0

        def above(tbl, data: pa.Table) -> pa.Table:
            nonlocal kept
            held = tables.last_property(tbl, POS_PROP) or ZERO
            out = data.filter(pc.greater(data.column(POSITION), pa.scalar(held)))
            kept = out.num_rows
            if trace_enabled() and kept < data.num_rows:
                trace("sink.fenced", source=self.source, table=name, cached=self._wm.get(name), held=held,
                      rows=data.num_rows, kept=kept, first=data.column(POSITION)[0].as_py(),
                      last=data.column(POSITION)[-1].as_py())
            if held > self._wm.get(name, ZERO):
                self._wm[name] = held  # another writer got further: later batches skip what it holds
            return out

        self._evolve(name, rows.schema)
        tables.append(self.catalog, name, rows, run_id=self.run_id, properties=props, fence=above)
        if kept:
            self._committed(name, props[POS_PROP])
        return kept

    def _fill_unchanged(self, t: str, good: pa.Table, bronze: pa.Table, quarantine: pa.Table) -> pa.Table:
        """Unchanged TOASTed values were not sent: take them from the key's previous version."""
        keys = self.keys(t)
        unchanged = dict(zip(bronze.column(POSITION).to_pylist(), bronze.column("_eai_unchanged").to_pylist()))
        rows = good.to_pylist()
        need = {tuple(r[k] for k in keys) for r in rows if unchanged.get(r[POSITION])}
        current: dict[tuple, dict] = {}
        silver = self.silver(t)
        if need and tables.exists(self.catalog, silver):
            df = cast(pl.DataFrame, pl.from_arrow(tables.read(tables.load(self.catalog, silver))))
            if df.height:
                for r in df.to_dicts():
                    k = tuple(r[c] for c in keys)
                    if k in need:
                        current[k] = r
        for r in rows:
            k = tuple(r[c] for c in keys)
            cols = unchanged.get(r[POSITION])
            if cols:
                prev = current.get(k, {})
                for c in cols.split(","):
                    r[c] = prev.get(c)
            current[k] = r
        return pa.Table.from_pylist(rows, schema=good.schema)

    def _truncate(self, t: str, e: ChangeEvent, props: dict) -> None:
        silver = self.silver(t)
        if not tables.exists(self.catalog, silver) or e.position <= self.watermark(silver):
            return
        tbl = tables.load(self.catalog, silver)
        if self.deletes == "tombstone":
            cur = tables.read(tbl)
            cur = cur.set_column(cur.schema.get_field_index(POSITION), POSITION,
                                 pa.array([e.position] * cur.num_rows, pa.string()))
            cur = cur.set_column(cur.schema.get_field_index(DELETED), DELETED, pa.array([True] * cur.num_rows))
        else:
            cur = tbl.schema().as_arrow().empty_table()
        tables.overwrite(self.catalog, silver, cur, run_id=self.run_id, properties=props)
        self._committed(silver, props[POS_PROP])
        if self.scd2 and tables.exists(self.catalog, self.history(t)):
            h = cast(pl.DataFrame, pl.from_arrow(tables.read(tables.load(self.catalog, self.history(t)))))
            valid_to = pl.when(pl.col("_eai_current")).then(pl.lit(e.commit_time)).otherwise(pl.col("_eai_valid_to"))
            h = h.with_columns(valid_to.alias("_eai_valid_to"), pl.lit(False).alias("_eai_current"))
            tables.overwrite(self.catalog, self.history(t), h.to_arrow(), run_id=self.run_id, properties=props)
            self._committed(self.history(t), props[POS_PROP])

    # ------------------------------------------------------------------ SCD2
    def _history_rows(self, t: str, good: pa.Table, bronze: pa.Table) -> pa.Table:
        n = good.num_rows
        g = good.drop_columns([c for c in (DELETED,) if c in good.column_names])
        return (g.append_column("_eai_valid_from", pa.array([self.now()] * n, pa.timestamp("us", tz="UTC")))
                 .append_column("_eai_valid_to", pa.nulls(n, pa.timestamp("us", tz="UTC")))
                 .append_column("_eai_current", pa.array([True] * n, pa.bool_()))
                 .append_column("_eai_version", g.column(POSITION)))

    def _history_merge(self, t: str, changes: pa.Table, evs: list[ChangeEvent], props: dict) -> None:
        keys = self.keys(t)
        name = self.history(t)
        when = {e.position: e.commit_time for e in evs}
        ch = cast(pl.DataFrame, pl.from_arrow(changes))
        ch = ch.with_columns((pl.col(DELETED).fill_null(False) if DELETED in ch.columns else pl.lit(False)).alias(DELETED))
        ch = ch.with_columns(pl.col(POSITION).replace_strict(when, default=None, return_dtype=pl.Datetime("us", "UTC"))
                             .alias("_eai_valid_from"))
        prev = pl.DataFrame()
        if tables.exists(self.catalog, name):
            h = cast(pl.DataFrame, pl.from_arrow(tables.read(tables.load(self.catalog, name))))
            if h.height:
                prev = h.filter(pl.col("_eai_current")).join(ch.select(keys).unique(), on=keys, how="semi")
                prev = prev.drop(["_eai_valid_to", "_eai_current"]).with_columns(pl.lit(False).alias(DELETED))
        allv = pl.concat([prev, ch], how="diagonal_relaxed") if prev.height else ch
        allv = allv.sort(keys + [POSITION])
        allv = allv.with_columns(pl.col("_eai_valid_from").shift(-1).over(keys).alias("_eai_valid_to"),
                                 pl.col(POSITION).shift(-1).over(keys).is_null().alias("__last"))
        allv = allv.filter(~pl.col(DELETED)).with_columns(pl.col("__last").alias("_eai_current")).drop(["__last", DELETED])
        # the version key is its own position: the closing update of an old version replaces that row
        allv = allv.with_columns(pl.col(POSITION).alias("_eai_version"))
        out = allv.to_arrow()
        self._evolve(name, out.schema)
        tables.merge(self.catalog, name, out, keys=keys + ["_eai_version"], run_id=self.run_id, properties=props)
        self._committed(name, props[POS_PROP])
