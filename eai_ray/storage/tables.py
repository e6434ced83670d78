"""Iceberg table operations for the medallion layers.

- ``evolve``: add new columns, widen types, flag removed ones, stop on incompatible changes.
- ``append`` / ``overwrite`` / ``commit_files``: one snapshot per write, its summary carries the
  run id and any checkpoint (``eai.*`` properties).
- ``merge``: a copy-on-write MERGE by key with sequence-by semantics. pyiceberg's ``upsert``
  compares rows in Python and grows with batch size; here only the data files whose key range
  can hold a changed key are read (manifest bounds), the merge is a vectorised anti-join in
  polars, and the rewritten files replace the old ones in one overwrite snapshot.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, bin_pack_arrow_table, pyarrow_to_schema, write_file
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.utils.properties import property_as_int

from eai_ray.errors import CommitConflict, IncompatibleSchemaChange, TableNotFound
from eai_ray.retry import COMMIT_CONFLICT
from eai_ray.storage import pyiceberg_compat
from eai_ray.storage.dedup import latest_per_key
from eai_ray.types import can_widen, fits_into, iceberg_safe, make_iceberg_safe

pyiceberg_compat.install()  # NULL lists of structs stay NULL at rest (see the module)

TARGET_FILE_BYTES = str(64 * 1024 * 1024)  # several files per large table, so MERGE can prune


@dataclass
class SchemaChange:
    kind: str  # added | removed | widened | incompatible
    column: str
    old: str | None = None
    new: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class MergeStats:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0  # changes equal, column for column, to the row already stored: nothing rewritten
    deleted: int = 0
    stale: int = 0  # changes older (by sequence) than the row already in the table
    files_rewritten: int = 0
    files_total: int = 0
    snapshot_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load(catalog: Catalog, name: str) -> Table:
    try:
        return catalog.load_table(name)
    except NoSuchTableError:
        raise TableNotFound(f"table {name} does not exist", table=name) from None


def exists(catalog: Catalog, name: str) -> bool:
    return catalog.table_exists(name)


# ---------------------------------------------------------------------- schema evolution
def evolve(catalog: Catalog, name: str, data_schema: pa.Schema, *,
           sort_by: list[str] | None = None) -> tuple[Table, list[SchemaChange]]:
    """Create the table, or bring its schema up to `data_schema`; returns the changes made.

    New columns are added, allowed promotions applied, removed columns reported (their
    values are written as nulls). A type that cannot be widened raises IncompatibleSchemaChange.
    """
    data_schema = make_iceberg_safe(data_schema.empty_table()).schema
    if not catalog.table_exists(name):
        tbl = catalog.create_table(name, schema=data_schema,
                                   properties={"write.target-file-size-bytes": TARGET_FILE_BYTES})
        return tbl, [SchemaChange("created", c) for c in data_schema.names]
    tbl = catalog.load_table(name)
    current = tbl.schema().as_arrow()
    cur = {f.name: iceberg_safe(f.type) for f in current}
    changes: list[SchemaChange] = []
    for f in data_schema:
        if f.name not in cur:
            changes.append(SchemaChange("added", f.name, new=str(f.type)))
        elif not fits_into(f.type, cur[f.name]):
            if can_widen(cur[f.name], f.type):
                changes.append(SchemaChange("widened", f.name, str(cur[f.name]), str(f.type)))
            else:
                raise IncompatibleSchemaChange(
                    f"{name}.{f.name} changed type from {cur[f.name]} to {f.type}, which cannot be widened; "
                    f"review the source change, then add a silver column mapping or drop and rebuild {name}",
                    table=name, column=f.name, old=str(cur[f.name]), new=str(f.type))
    for n in cur:
        if n not in data_schema.names:
            changes.append(SchemaChange("removed", n, old=str(cur[n])))
    if any(c.kind in ("added", "widened") for c in changes):
        evolved = pa.schema([pa.field(f.name, f.type, True) for f in data_schema
                             if f.name not in cur or any(c.column == f.name and c.kind == "widened" for c in changes)])
        with tbl.update_schema() as upd:
            upd.union_by_name(evolved)
        tbl = catalog.load_table(name)
    return tbl, changes


def align(tbl: Table, data: pa.Table) -> pa.Table:
    """Cast `data` to the table's schema: missing columns become nulls, order follows the table."""
    target = tbl.schema().as_arrow()
    data = make_iceberg_safe(data)
    cols = []
    for f in target:
        if f.name in data.column_names:
            col = data.column(f.name)
            cols.append(col if col.type.equals(f.type) else col.cast(f.type))
        else:
            cols.append(pa.nulls(data.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=pa.schema([pa.field(f.name, f.type, True) for f in target]))


# ---------------------------------------------------------------------- writes
def _props(run_id: str, extra: dict[str, Any] | None) -> dict[str, str]:
    props = {"eai.run_id": run_id, "eai.written_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    for k, v in (extra or {}).items():
        props[k if k.startswith("eai.") else f"eai.{k}"] = str(v)
    return props


def _retry_commit(fn, *, table: str, sleep=None):
    """Run a commit; on a concurrent-commit conflict reload and retry, never drop the write.

    Each conflict is a ``CommitConflict``, retried by the ``commit_conflict`` policy (eai_ray/retry.py);
    the last one is raised when the attempts run out.
    """
    def once():
        try:
            return fn()
        except CommitFailedException as exc:
            raise CommitConflict(f"commit to {table} kept conflicting: {exc}", table=table) from None

    return COMMIT_CONFLICT.call(once, sleep=sleep)


def write_data_files(tbl: Table, data: pa.Table) -> list:
    """Write Parquet data files for `data` without committing them (runs in Ray tasks)."""
    return _data_files(tbl.metadata, tbl.io, align(tbl, data))


def _data_files(metadata: TableMetadata, io, data: pa.Table) -> list:
    """Parquet data files (pyiceberg ``DataFile``s, with column stats) holding `data`, not committed.

    Written by pyiceberg's public (not underscored, though undocumented) writer ``write_file`` over
    ``WriteTask``s bin-packed to the table's ``write.target-file-size-bytes``, field ids from the
    table schema: what ``Table.append`` does, minus the commit. They are committed by
    ``update_snapshot().fast_append()/.overwrite()`` in one snapshot. eai-ray tables are
    unpartitioned; a partitioned one is refused rather than written unpartitioned. No rows, no files.
    """
    if not metadata.spec().is_unpartitioned():
        raise NotImplementedError("writing data files for a partitioned table is not supported by eai-ray")
    if data.num_rows == 0:
        return []
    target = property_as_int(metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                             TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    assert target is not None  # a default is given
    schema = pyarrow_to_schema(data.schema, name_mapping=metadata.schema().name_mapping,
                               format_version=metadata.format_version)
    write_uuid = uuid.uuid4()
    tasks = (WriteTask(write_uuid=write_uuid, task_id=i, schema=schema, record_batches=batches)
             for i, batches in enumerate(bin_pack_arrow_table(data, target)))
    return list(write_file(io, metadata, tasks))


def commit_files(catalog: Catalog, name: str, files: Iterable, *, run_id: str,
                 properties: dict[str, Any] | None = None) -> int | None:
    """Fast-append already written data files as one snapshot; returns its id."""
    files = list(files)

    def go():
        tbl = catalog.load_table(name)
        tx = tbl.transaction()
        with tx.update_snapshot(snapshot_properties=_props(run_id, properties)).fast_append() as app:
            for f in files:
                app.append_data_file(f)
        tx.commit_transaction()
        return catalog.load_table(name).current_snapshot().snapshot_id

    return _retry_commit(go, table=name)


def discard_files(catalog: Catalog, name: str, files: Iterable) -> None:
    """Delete data files written for `name` that will never be committed (nothing references them)."""
    io = catalog.load_table(name).io
    for f in files:
        try:
            io.delete(f.file_path)
        except (OSError, ValueError):
            pass  # an orphan file is harmless; maintenance removes what is left


def append(catalog: Catalog, name: str, data: pa.Table, *, run_id: str,
           properties: dict[str, Any] | None = None,
           fence: Callable[[Table, pa.Table], pa.Table] | None = None) -> int | None:
    """Append `data` as one snapshot; returns its id.

    `fence(tbl, data)` makes it a conditional append: it gets the table as loaded for this attempt
    and returns the part of `data` that may go on top of that snapshot (e.g. the rows above the
    position it records). The commit asserts that the snapshot is still current, so when another
    writer commits in between, the attempt fails and the next one asks `fence` again on the new
    snapshot, instead of appending the same rows on top of the other writer's. Nothing left: no
    commit, returns None.
    """
    def go():
        tbl = catalog.load_table(name)
        rows = data if fence is None else fence(tbl, data)
        if fence is not None and rows.num_rows == 0:
            return None
        tbl.append(align(tbl, rows), snapshot_properties=_props(run_id, properties))
        return tbl.current_snapshot().snapshot_id
    return _retry_commit(go, table=name)


def overwrite(catalog: Catalog, name: str, data: pa.Table, *, run_id: str,
              properties: dict[str, Any] | None = None) -> int | None:
    def go():
        tbl = catalog.load_table(name)
        if tbl.current_snapshot() is None:  # nothing to replace: a plain append (no empty delete)
            tbl.append(align(tbl, data), snapshot_properties=_props(run_id, properties))
        else:
            tbl.overwrite(align(tbl, data), snapshot_properties=_props(run_id, properties))
        return tbl.current_snapshot().snapshot_id
    return _retry_commit(go, table=name)


def row_count(tbl: Table) -> int:
    """Rows in the table's current snapshot, from its summary (no scan)."""
    snap = tbl.current_snapshot()
    if snap is None or snap.summary is None:
        return 0
    return int(snap.summary.additional_properties.get("total-records", 0))


@dataclass
class ReplaceStats:
    inserted: int = 0  # rows of the new content that the table did not hold
    deleted: int = 0  # rows the table held that the new content does not
    unchanged: int = 0  # rows in both (as a multiset: a row twice in each counts twice)
    snapshot_id: int | None = None


def replace(catalog: Catalog, name: str, data: pa.Table, *, run_id: str,
            properties: dict[str, Any] | None = None) -> ReplaceStats:
    """Make `data` the whole content of table `name` in one snapshot, unless it already is.

    For tables without a key fed by full reads: the table ends equal to the latest read, and the
    stats say what that changed, compared row for row (by content hash). Example::

        replace(catalog, "silver.report", latest_read, run_id="r1").unchanged
    """
    from eai_ray.storage.dedup import row_hashes

    def go():
        tbl = catalog.load_table(name)
        new = align(tbl, data)
        old = tbl.scan().to_arrow() if tbl.current_snapshot() is not None else new.slice(0, 0)
        stats = ReplaceStats()
        new_h = pl.Series(row_hashes(new).to_numpy()).value_counts(name="n")
        old_h = pl.Series(row_hashes(align(tbl, old)).to_numpy()).value_counts(name="n")
        both = new_h.join(old_h, on=new_h.columns[0], how="inner", suffix="_old")
        stats.unchanged = int(both.select(pl.min_horizontal("n", "n_old")).sum().item() or 0)
        stats.inserted = new.num_rows - stats.unchanged
        stats.deleted = old.num_rows - stats.unchanged
        if stats.inserted == 0 and stats.deleted == 0:
            return stats
        props = _props(run_id, properties)
        props.update({"eai.replace.inserted": str(stats.inserted), "eai.replace.deleted": str(stats.deleted)})
        if tbl.current_snapshot() is None:
            tbl.append(new, snapshot_properties=props)
        else:
            tbl.overwrite(new, snapshot_properties=props)
        stats.snapshot_id = tbl.current_snapshot().snapshot_id
        return stats

    return _retry_commit(go, table=name)


# ---------------------------------------------------------------------- merge
def _file_may_hold(task, key_field, keys: pa.Array) -> bool:
    from pyiceberg.conversions import from_bytes

    lo_b = (task.file.lower_bounds or {}).get(key_field.field_id)
    hi_b = (task.file.upper_bounds or {}).get(key_field.field_id)
    if lo_b is None or hi_b is None:
        return True
    try:
        lo, hi = from_bytes(key_field.field_type, lo_b), from_bytes(key_field.field_type, hi_b)
        inside = pc.and_(pc.greater_equal(keys, pa.scalar(lo, keys.type)),
                         pc.less_equal(keys, pa.scalar(hi, keys.type)))
        return bool(pc.any(inside).as_py())
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return True  # bounds of a type we cannot compare (truncated strings...): read the file


def merge(catalog: Catalog, name: str, changes: pa.Table, *, keys: list[str], run_id: str,
          sequence_by: str | None = None, delete_flag: str | None = None,
          properties: dict[str, Any] | None = None) -> MergeStats:
    """MERGE `changes` into table `name` by `keys`: latest by `sequence_by` wins.

    `changes` may hold several versions of a key; only the latest is applied. A change whose
    sequence value is lower than the row already stored is stale and skipped (a late or
    replayed event never overwrites newer data). Rows whose `delete_flag` column is true
    delete the key. Everything lands in one snapshot.

    Example::

        merge(catalog, "silver.customers", batch, keys=["id"], sequence_by="updated_at", run_id="r1")
    """
    def go():
        tbl = catalog.load_table(name)
        return _merge_once(tbl, changes, keys=keys, run_id=run_id, sequence_by=sequence_by,
                           delete_flag=delete_flag, properties=properties)
    return _retry_commit(go, table=name)


def _merge_once(tbl: Table, changes: pa.Table, *, keys, run_id, sequence_by, delete_flag, properties) -> MergeStats:
    stats = MergeStats()
    flags = None
    if delete_flag is not None and delete_flag in changes.column_names:
        flags = changes.column(delete_flag)
        changes = changes.drop_columns([delete_flag])
    ch = cast(pl.DataFrame, pl.from_arrow(align(tbl, changes)))  # a table gives a DataFrame
    if flags is not None:
        ch = ch.with_columns(cast(pl.Series, pl.from_arrow(flags)).fill_null(False).alias("__eai_delete"))
    ch = latest_per_key(ch, keys, sequence_by)

    snapshot = tbl.current_snapshot()
    tasks = list(tbl.scan().plan_files()) if snapshot else []
    stats.files_total = len(tasks)
    if len(keys) == 1 and tasks:
        key_field = tbl.schema().find_field(keys[0])
        key_arr = ch.get_column(keys[0]).to_arrow()
        key_arr = key_arr.cast(tbl.schema().as_arrow().field(keys[0]).type)
        candidates = [t for t in tasks if _file_may_hold(t, key_field, key_arr)]
    else:
        candidates = tasks
    stats.files_rewritten = len(candidates)

    if candidates:
        existing_arrow = ArrowScan(tbl.metadata, tbl.io, tbl.schema(), AlwaysTrue()).to_table(candidates)
        existing = pl.from_arrow(existing_arrow)
    else:
        existing = pl.from_arrow(tbl.schema().as_arrow().empty_table())
    if not isinstance(existing, pl.DataFrame):
        existing = existing.to_frame()

    if sequence_by and existing.height:
        old_seq = existing.select(keys + [pl.col(sequence_by).alias("__eai_old_seq")])
        j = ch.join(old_seq, on=keys, how="left", nulls_equal=False)
        is_stale = pl.col("__eai_old_seq").is_not_null() & (
            pl.col(sequence_by).is_null() | (pl.col(sequence_by) < pl.col("__eai_old_seq")))
        stats.stale = j.filter(is_stale).height
        ch = j.filter(~is_stale).drop("__eai_old_seq")

    if existing.height and ch.height:
        # a re-read of an unchanged source must not rewrite (or count as updated) rows it already holds
        same = _same_rows(ch, existing, keys)
        stats.unchanged = same.height
        if same.height:
            ch = ch.join(same, on=keys, how="anti", nulls_equal=True)
    matched = ch.join(existing.select(keys), on=keys, how="semi") if existing.height else ch.head(0)
    kept = existing.join(ch.select(keys), on=keys, how="anti") if ch.height else existing
    if "__eai_delete" in ch.columns:
        deletes = ch.filter(pl.col("__eai_delete"))
        stats.deleted = deletes.join(existing.select(keys), on=keys, how="semi").height if existing.height else 0
        matched = matched.filter(~pl.col("__eai_delete"))
        ch = ch.filter(~pl.col("__eai_delete")).drop("__eai_delete")
    stats.updated = matched.height
    stats.inserted = ch.height - stats.updated

    if ch.height == 0 and stats.deleted == 0:
        return stats  # nothing to change: no empty snapshot

    merged = pl.concat([kept, ch.select(kept.columns)], how="vertical_relaxed").sort(keys)
    merged_arrow = align(tbl, merged.to_arrow())
    props = _props(run_id, properties)
    props.update({"eai.merge.inserted": str(stats.inserted), "eai.merge.updated": str(stats.updated),
                  "eai.merge.deleted": str(stats.deleted)})
    tx = tbl.transaction()
    new_files = _data_files(tx.table_metadata, tbl.io, merged_arrow)
    if candidates:
        with tx.update_snapshot(snapshot_properties=props).overwrite() as ow:
            for t in candidates:
                ow.delete_data_file(t.file)
            for f in new_files:
                ow.append_data_file(f)
    else:
        with tx.update_snapshot(snapshot_properties=props).fast_append() as app:
            for f in new_files:
                app.append_data_file(f)
    tx.commit_transaction()
    current = tbl.refresh().current_snapshot()
    assert current is not None  # the commit above made one
    stats.snapshot_id = current.snapshot_id
    return stats


def _same_rows(changes: pl.DataFrame, existing: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Keys of the (non-delete) changes whose every column equals the stored row, as a frame of keys.

    Rows are compared by a 64-bit hash of their value columns computed in this process for both
    sides, so nested and null values compare as equal when they are equal.
    """
    values = [c for c in existing.columns if c not in keys]
    live = changes.filter(~pl.col("__eai_delete")) if "__eai_delete" in changes.columns else changes
    if not values:
        return live.select(keys).join(existing.select(keys), on=keys, how="semi", nulls_equal=True)
    new = live.select(keys).with_columns(live.select(values).hash_rows(seed=7).alias("__eai_h"))
    old = existing.select(keys).with_columns(existing.select(values).hash_rows(seed=7).alias("__eai_h"))
    return new.join(old, on=[*keys, "__eai_h"], how="semi", nulls_equal=True).select(keys)


# ---------------------------------------------------------------------- reads
def summary(tbl: Table) -> dict[str, str]:
    snap = tbl.current_snapshot()
    return dict(snap.summary.additional_properties) if snap and snap.summary else {}


def last_property(tbl: Table, key: str) -> str | None:
    """Walk back from the current snapshot to the newest one carrying `key`."""
    snap = tbl.current_snapshot()
    while snap is not None:
        props = snap.summary.additional_properties if snap.summary else {}
        if key in props:
            return props[key]
        snap = tbl.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return None


def history(tbl: Table) -> list[dict[str, Any]]:
    """Snapshots newest first, with operation, row counts and the eai.* properties."""
    out = []
    for entry in reversed(tbl.metadata.snapshots):
        s = entry.summary
        props = dict(s.additional_properties) if s else {}
        out.append({
            "snapshot_id": entry.snapshot_id,
            "timestamp": dt.datetime.fromtimestamp(entry.timestamp_ms / 1000, dt.timezone.utc).isoformat(),
            "operation": s.operation.value if s else None,
            "run_id": props.get("eai.run_id"),
            **_row_changes(props),
            "total_rows": int(props.get("total-records", 0)),
            "properties": {k: v for k, v in props.items() if k.startswith("eai.")},
        })
    return out


def _row_changes(props: dict[str, str]) -> dict[str, int]:
    """Rows a snapshot added, updated and deleted as the table's content sees it. A copy-on-write
    merge or replace rewrites whole files, so Iceberg's added-/deleted-records count every row of
    the rewritten files; those appear as ``rewritten_rows`` only."""
    for op in ("merge", "replace"):
        if f"eai.{op}.inserted" in props:
            return {"added_rows": int(props[f"eai.{op}.inserted"]), "updated_rows": int(props.get(f"eai.{op}.updated", 0)),
                    "deleted_rows": int(props.get(f"eai.{op}.deleted", 0)),
                    "rewritten_rows": int(props.get("added-records", 0))}
    return {"added_rows": int(props.get("added-records", 0)), "updated_rows": 0,
            "deleted_rows": int(props.get("deleted-records", 0)), "rewritten_rows": 0}


def snapshot_as_of(tbl: Table, when: dt.datetime) -> int | None:
    """The snapshot current at `when` (time travel by time)."""
    ms = int(when.timestamp() * 1000)
    best = None
    for s in tbl.metadata.snapshots:
        if s.timestamp_ms <= ms and (best is None or s.timestamp_ms >= best.timestamp_ms):
            best = s
    return best.snapshot_id if best else None


def read(tbl: Table, *, snapshot_id: int | None = None, row_filter: Any = AlwaysTrue(),
         columns: tuple[str, ...] = ("*",), limit: int | None = None) -> pa.Table:
    return tbl.scan(row_filter=row_filter, selected_fields=columns, snapshot_id=snapshot_id,
                    limit=limit).to_arrow()
