"""The batch pipeline: sources -> bronze -> silver (+ quarantine) -> gold, one run at a time.

Crash safety without a separate state store:
- a resource's extraction commits ONE bronze snapshot whose summary holds the checkpoint
  (``eai.checkpoint``) and a load id; rows carry ``_eai_load_id``;
- silver consumes bronze loads after the one recorded in its own last snapshot
  (``eai.bronze_load_id``), so a re-run after a crash picks up exactly what is not in silver yet;
- quarantine is committed before silver with the same load id, and skipped when already there;
- gold is recomputed from silver (idempotent).
A failing table stops alone (typed error in the summary); the others go on.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import EqualTo, GreaterThan

from eai_ray import retry
from eai_ray.config import PipelineConfig, SilverTable, expand_tables, has_wildcard, resolvable_secrets, resources_of
from eai_ray.errors import ConfigError, EaiError, SqlValidationError
from eai_ray.ingestion.base import ERROR_COLUMN, POSITION_COLUMN, RAW_COLUMN, DiscoveredSchema, merge_checkpoints
from eai_ray.observability import metrics
from eai_ray.observability.progress import Progress
from eai_ray.orchestration.dag import gold_order
from eai_ray.orchestration.executor import Executor
from eai_ray.processing import quality as qengine
from eai_ray.processing.silver import QUARANTINE_SCHEMA, SilverResult, renamed_columns, transform
from eai_ray.processing.sql import column_lineage, run_select, validate_select
from eai_ray.redact import redact, redact_tree
from eai_ray.settings import settings
from eai_ray.storage import tables as T
from eai_ray.storage.catalog import open_catalog
from eai_ray.storage.dedup import ROW_HASH, combine_fingerprints, fingerprint, latest_per_key, row_hashes
from eai_ray.storage.metadata import MetadataStore
from eai_ray.types import make_iceberg_safe

log = logging.getLogger(__name__)

LOAD_ID = "_eai_load_id"
CONNECTOR_META = (POSITION_COLUMN, RAW_COLUMN, ERROR_COLUMN)
BRONZE_META = ("_eai_source", "_eai_run_id", "_eai_ingested_at", LOAD_ID)
SILVER_CHUNK_ROWS = 500_000


@dataclass
class TableReport:
    source: str
    bronze: str
    silver: str | None = None
    rows_read: int = 0
    bronze_rows: int = 0
    silver_in: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0  # rows silver already held, value for value: nothing rewritten
    deleted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    stale: int = 0
    mode: str | None = None  # how silver took the load: merge (by key) | replace | append
    bronze_skipped: int = 0  # rows read from the source that bronze already held (not appended again)
    silver_rows_before: int | None = None
    silver_rows_after: int | None = None
    renamed: dict[str, str] = field(default_factory=dict)  # source column -> silver column (case collisions)
    source_format: dict[str, Any] | None = None  # files: sniffed encoding, delimiter, header... with confidence
    notes: list[str] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)  # rows kept despite a `warn` rule
    quality: dict[str, float] = field(default_factory=dict)
    schema_changes: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    retries: int = 0
    seconds: float = 0.0
    status: str = "ok"
    error: dict[str, Any] | None = None

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated

    @property
    def reconciled(self) -> bool:
        """Every row consumed by silver is accounted for (accepted + unchanged + quarantined + duplicates),
        and silver grew by exactly what was inserted: a re-read never doubles it unnoticed."""
        if self.silver is None:
            return True
        counted = self.silver_in == (self.accepted + self.unchanged + self.quarantined + self.duplicates
                                     + self.stale)
        return counted and self.silver_rows_after == self.expected_silver_rows

    @property
    def expected_silver_rows(self) -> int | None:
        """Rows silver must hold after this run, from its row count before and what the run did."""
        if self.silver_rows_before is None:
            return self.silver_rows_after  # silver not touched in this run
        if self.mode == "replace":
            return self.inserted + self.updated + self.unchanged if self.silver_in else self.silver_rows_before
        return self.silver_rows_before + self.inserted - self.deleted

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(accepted=self.accepted, reconciled=self.reconciled, expected_silver_rows=self.expected_silver_rows)
        return d


@dataclass
class RunSummary:
    run_id: str
    pipeline: str
    status: str
    started_at: str
    seconds: float
    tables: list[TableReport]
    gold: list[dict[str, Any]]
    executor: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "pipeline": self.pipeline, "status": self.status,
                "started_at": self.started_at, "seconds": round(self.seconds, 3), "executor": self.executor,
                "tables": [t.to_dict() for t in self.tables], "gold": self.gold}


def table_slug(source: str, resource: str) -> str:
    """'<source>_<resource>' as one Iceberg name part: dots, spaces and slashes become '_'."""
    import re

    return re.sub(r"[.\s/\\]", "_", f"{source}_{resource}")


def bronze_name(source: str, resource: str) -> str:
    return f"bronze.{table_slug(source, resource)}"


def default_silver(source, resource, discovered: DiscoveredSchema | None = None) -> SilverTable:
    """Silver with the discovered schema and the source's key, for resources the YAML leaves implicit.

    The key is the YAML's ``primary_key``, else the one the source declares (a database's primary
    key or unique constraint), named as silver stores it.
    """
    from eai_ray.processing.silver import silver_names

    key = list(resource.primary_key) or list(discovered.primary_key if discovered else [])
    if discovered is not None:
        names = silver_names([c.name for c in discovered.columns])
        key = [names.get(k, k) for k in key]
    return SilverTable(name=table_slug(source.name, resource.name),
                       source=f"{source.name}.{resource.name}", primary_key=key)


def silver_mode(spec: SilverTable, *, full: bool) -> str:
    """How silver takes a load: ``merge`` by key; without a key, ``replace`` for full reads (silver
    becomes the latest read, in one snapshot) or ``append`` for incremental ones; ``full_refresh`` wins."""
    if spec.full_refresh == "replace":
        return "replace"
    if spec.primary_key:
        return "merge"
    return spec.full_refresh or ("replace" if full else "append")


def is_full_read(source, resource) -> bool:
    """True when every read returns the whole resource (no cursor, not file-by-file): a snapshot."""
    return getattr(resource, "incremental", None) is None and source.kind != "files"


def add_bronze_meta(table: pa.Table, *, source: str, run_id: str, load_id: int, now: dt.datetime) -> pa.Table:
    """Append ingestion metadata; constants are dictionary-encoded then cast (no Python per row)."""
    import numpy as np

    n = table.num_rows
    zeros = pa.array(np.zeros(n, dtype=np.int32))

    def const_str(v: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(zeros, pa.array([v])).cast(pa.string())

    table = make_iceberg_safe(table)
    if ROW_HASH not in table.column_names:
        table = table.append_column(ROW_HASH, row_hashes(table))
    return (table.append_column("_eai_source", const_str(source))
                 .append_column("_eai_run_id", const_str(run_id))
                 .append_column("_eai_ingested_at", pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), "us")),
                                                              pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")))
                 .append_column(LOAD_ID, pa.array(np.full(n, load_id, dtype=np.int64))))


def extract_partition(cfg: PipelineConfig, source_name: str, resource: str, partition, checkpoint,
                      bronze: str, run_id: str, load_id: int, now: dt.datetime, batch_rows: int,
                      secrets: dict[str, str] | None = None):
    """One parallel read: source partition -> bronze Parquet data files (not committed)."""
    from eai_ray.config import provide_secrets
    from eai_ray.ingestion.registry import connector_for

    provide_secrets(secrets)
    catalog = open_catalog(cfg)
    tbl = catalog.load_table(bronze)
    conn = connector_for(cfg.source(source_name))
    files, rows, ckpt, prints = [], 0, None, []
    try:
        for batch in conn.read(resource, checkpoint=checkpoint, partition=partition, batch_rows=batch_rows):
            if batch.table.num_rows:
                data = add_bronze_meta(batch.table, source=f"{source_name}.{resource}", run_id=run_id,
                                       load_id=load_id, now=now)
                files.extend(T.write_data_files(tbl, data))
                rows += batch.table.num_rows
                prints.append(fingerprint(data.column(ROW_HASH)))
            ckpt = merge_checkpoints(ckpt, batch.checkpoint)
    finally:
        conn.close()
    return files, rows, ckpt, combine_fingerprints(prints)


def silver_chunk(bronze_chunk: pa.Table, spec: SilverTable, source_types: dict, run_id: str, source: str,
                 references: dict) -> SilverResult:
    return transform(bronze_chunk, spec, source_types=source_types, run_id=run_id, source=source,
                     references=references)


class PipelineRunner:
    """Runs one pipeline config once.

    Example::

        summary = PipelineRunner(load_pipeline("configs/demo.yaml"), executor=LocalExecutor()).run()
    """

    def __init__(self, cfg: PipelineConfig, *, executor: Executor, progress: Progress | None = None,
                 run_id: str | None = None, clock=None, sleep=None) -> None:
        self.cfg = cfg
        self.executor = executor
        self.progress = progress or Progress(enabled=False)
        self.sleep = sleep or time.sleep  # between retries of a table step (the `task` retry policy)
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.run_id = run_id or f"{self.clock():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.catalog = open_catalog(cfg)
        self.store = MetadataStore.for_pipeline(cfg)

    # ------------------------------------------------------------------ run
    def run(self, *, only: list[str] | None = None) -> RunSummary:
        t0 = time.perf_counter()
        started = self.clock()
        self.store.start_run(self.run_id, self.cfg.name)
        reports: list[TableReport] = []
        gold_reports: list[dict[str, Any]] = []
        status = "failed"
        try:
            self._expand_wildcards(reports)
            work = [(s, r) for s in self.cfg.sources for r in resources_of(s)
                    if not only or s.name in only or f"{s.name}.{r.name}" in only]
            with self.progress:
                silver_jobs = []
                for source, resource in work:
                    rep = TableReport(source=f"{source.name}.{resource.name}",
                                      bronze=bronze_name(source.name, resource.name))
                    reports.append(rep)
                    t1 = time.perf_counter()
                    discovered = self._guard(rep, self._bronze, source, resource, rep)
                    self._timed(rep, "bronze", rep.bronze, t1)
                    spec = self.cfg.silver_for(source.name, resource.name)
                    if spec is None and self.cfg.auto_silver:
                        spec = default_silver(source, resource, discovered)
                    if spec is not None and rep.status == "ok":
                        rep.silver = f"silver.{spec.name}"
                        rep.mode = silver_mode(spec, full=is_full_read(source, resource))
                        silver_jobs.append((rep, spec, discovered))
                # silver in dependency order of `references` rules, so referenced keys exist
                for rep, spec, discovered in _order_by_references(silver_jobs):
                    t1 = time.perf_counter()
                    self._guard(rep, self._silver, rep, spec, discovered)
                    self._timed(rep, "silver", rep.silver, t1)
                gold_reports = self._gold()
            failed = [r for r in reports if r.status != "ok"] + [g for g in gold_reports if g["status"] != "ok"]
            status = "partial" if failed and len(failed) < len(reports) + len(gold_reports) else (
                "failed" if failed else "ok")
        finally:
            summary = RunSummary(run_id=self.run_id, pipeline=self.cfg.name, status=status,
                                 started_at=started.isoformat(), seconds=time.perf_counter() - t0,
                                 tables=reports, gold=gold_reports, executor=self.executor.name)
            self.store.finish_run(self.run_id, status, redact_tree(summary.to_dict()))
        return summary

    def _expand_wildcards(self, reports: list[TableReport]) -> None:
        """Replace each source's ``"*"`` table entry by the tables and views its actor lists now."""
        if not any(has_wildcard(s) for s in self.cfg.sources):
            return
        self.cfg = self.cfg.model_copy(update={"sources": list(self.cfg.sources)})  # the caller's stays as written
        for i, source in enumerate(self.cfg.sources):
            if not has_wildcard(source):
                continue
            rep = TableReport(source=f"{source.name}.*", bronze="-")
            names = self._guard(rep, self._list_tables, source)
            if names is None:
                reports.append(rep)  # the listing failed: one failed entry for the source, the rest goes on
                names = []
            self.cfg.sources[i] = expand_tables(source, names)

    def _list_tables(self, source) -> list[str]:
        return self.executor.source(self.cfg.name, source).list_tables()

    def _timed(self, rep: TableReport, layer: str, table: str, t0: float) -> None:
        seconds = time.perf_counter() - t0
        rep.seconds += seconds
        metrics.stage_seconds(self.cfg.name, table, layer, seconds)

    def _guard(self, rep: TableReport, fn, *args):
        """Run one table's step; transient errors retry (the ``task`` policy), others stop this table only."""
        def once():
            try:
                return fn(*args)
            except Exception as exc:
                cause = getattr(exc, "cause", None)
                if _is_ray_task_error(exc) and isinstance(cause, EaiError) and cause.transient:
                    raise cause from None  # a Ray task's transient error is retried like a local one
                raise

        def on_retry(exc: BaseException, attempt: int, wait: float) -> None:
            rep.retries += 1
            self.progress.log(f"[yellow]retrying {rep.source} after {type(exc).__name__}: {exc}")

        try:
            return retry.TASK.call(once, sleep=self.sleep, on_retry=on_retry)
        except EaiError as exc:
            if isinstance(exc, ConfigError) and not isinstance(exc, SqlValidationError):
                raise
            rep.status = "failed"
            rep.error = exc.to_dict()
            self.progress.log(f"[red]{rep.source}: {type(exc).__name__}: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - unknown errors stop this table, recorded for diagnosis
            if _is_ray_task_error(exc):
                cause = getattr(exc, "cause", None)
                if isinstance(cause, EaiError):
                    exc = cause
            rep.status = "failed"
            stage = getattr(fn, "__name__", "step").strip("_")
            rep.error = exc.to_dict() if isinstance(exc, EaiError) else {
                "type": type(exc).__name__, "transient": False, "stage": stage,
                "message": redact(f"{stage} of {rep.source} stopped on an unexpected {type(exc).__name__}: "
                                  f"{str(exc)[:400] or 'no detail'}; this is a bug in eai-ray, please report "
                                  "it with the source's column types")}
            self.progress.log(f"[red]{rep.source}: {rep.error['type']}: {rep.error['message']}")
            return None

    # ------------------------------------------------------------------ bronze
    def _bronze(self, source, resource, rep: TableReport) -> DiscoveredSchema:
        handle = self.executor.source(self.cfg.name, source)
        health = handle.check()
        if health.get("status") != "healthy" and health.get("error"):
            raise _error_from(health["error"])
        discovered = handle.discover(resource.name)
        rep.source_format = getattr(discovered, "format_info", None) or None
        for why in (getattr(discovered, "warnings", None) or {}).values():
            rep.notes.append(f"warning: {why}")  # e.g. a numeric too wide for a decimal, kept as text
        self.store.record_schema(f"source:{rep.source}", discovered.to_dict(), run_id=self.run_id)
        bronze = rep.bronze
        checkpoint, load_id = self._bronze_state(bronze)
        full = is_full_read(source, resource)
        last_print = self._last_fingerprint(bronze) if full else None
        now = self.clock()
        partitions = handle.plan(resource.name, checkpoint, self.executor.parallelism(), self.cfg.batch_rows)
        total_rows, appended, new_ckpt = 0, 0, None
        if partitions:
            # typed source: fix the bronze schema first, then parallel tasks write data files
            # the connector's row metadata (raw record, position, per-row error) must survive too
            base = discovered.arrow_schema()
            for meta in CONNECTOR_META:
                if meta not in base.names:
                    base = base.append(pa.field(meta, pa.string()))
            schema = add_bronze_meta(base.empty_table(), source=rep.source,
                                     run_id=self.run_id, load_id=load_id, now=now).schema
            tbl, changes = T.evolve(self.catalog, bronze, schema)
            rep.schema_changes += [c.to_dict() for c in changes if c.kind != "created"
                                   and not c.column.startswith("_eai_")]
            files, prints = [], []
            with self.progress.step(f"extract {rep.source}", total=len(partitions)) as advance:
                secrets = resolvable_secrets([source, self.cfg.catalog])  # the task reads and writes
                args = [(self.cfg, source.name, resource.name, p, checkpoint, bronze, self.run_id, load_id, now,
                         self.cfg.batch_rows, secrets) for p in partitions]
                for f, rows, ck, fp in self.executor.map(extract_partition, args):
                    files.extend(f)
                    total_rows += rows
                    prints.append(fp)
                    new_ckpt = merge_checkpoints(new_ckpt, ck)
                    advance(1)
            print_ = combine_fingerprints(prints)
            if full and print_ == last_print:
                T.discard_files(self.catalog, bronze, files)  # the same rows as the last load: nothing to add
                self._note_unchanged(rep, total_rows)
            elif total_rows:
                T.commit_files(self.catalog, bronze, files, run_id=self.run_id,
                               properties=self._bronze_props(checkpoint, new_ckpt, load_id, total_rows,
                                                             print_ if full else None))
                appended = total_rows
        else:
            with self.progress.step(f"extract {rep.source}", total=1) as advance:
                tables, new_ckpt = handle.read(resource.name, checkpoint, self.cfg.batch_rows)
                advance(1)
            if tables:
                data = pa.concat_tables([make_iceberg_safe(t) for t in tables], promote_options="permissive")
                data = add_bronze_meta(data, source=rep.source, run_id=self.run_id, load_id=load_id, now=now)
                total_rows = data.num_rows
                print_ = fingerprint(data.column(ROW_HASH))
                key = list(resource.primary_key) or list(discovered.primary_key)
                if full and print_ == last_print:
                    self._note_unchanged(rep, total_rows)
                    data = data.slice(0, 0)
                elif full and key and getattr(self.cfg.silver_for(source.name, resource.name),
                                              "full_refresh", None) != "replace":
                    data = self._not_yet_landed(rep, bronze, data, key)
                if data.num_rows:
                    tbl, changes = T.evolve(self.catalog, bronze, data.schema)
                    rep.schema_changes += [c.to_dict() for c in changes if c.kind != "created"
                                           and not c.column.startswith("_eai_")]
                    T.append(self.catalog, bronze, data, run_id=self.run_id,
                             properties=self._bronze_props(checkpoint, new_ckpt, load_id, data.num_rows,
                                                           print_ if full else None))
                    appended = data.num_rows
        rep.rows_read, rep.bronze_rows = total_rows, appended
        rep.checkpoint = merge_checkpoints(checkpoint, new_ckpt)
        if self.catalog.table_exists(bronze):
            tbl = self.catalog.load_table(bronze)
            self.store.record_schema(bronze, _schema_dict(tbl.schema().as_arrow()), run_id=self.run_id,
                                     changes=rep.schema_changes)
            self.store.record_edges([(f"source:{rep.source}", c.name, bronze, c.name, "extract")
                                     for c in discovered.columns if c.name in tbl.schema().column_names],
                                    run_id=self.run_id)
        metrics.rows_written(self.cfg.name, bronze, "bronze", appended)
        crash_point(f"after_bronze:{rep.source}")
        return discovered

    def _bronze_state(self, bronze: str) -> tuple[dict | None, int]:
        if not self.catalog.table_exists(bronze):
            return None, 1
        tbl = self.catalog.load_table(bronze)
        ck = T.last_property(tbl, "eai.checkpoint")
        last = T.last_property(tbl, "eai.load_id")
        return (json.loads(ck) if ck else None), (int(last) + 1 if last else 1)

    def _bronze_props(self, old, new, load_id, rows, print_: str | None = None) -> dict[str, Any]:
        props = {"checkpoint": json.dumps(merge_checkpoints(old, new), default=str), "load_id": load_id,
                 "rows": rows}
        if print_ is not None:
            props["fingerprint"] = print_  # of the whole read, so an unchanged re-read is not appended again
        return props

    def _last_fingerprint(self, bronze: str) -> str | None:
        if not self.catalog.table_exists(bronze):
            return None
        tbl = self.catalog.load_table(bronze)
        snap = tbl.current_snapshot()
        props = snap.summary.additional_properties if snap and snap.summary else {}
        return props.get("eai.fingerprint")

    def _note_unchanged(self, rep: TableReport, rows: int) -> None:
        rep.bronze_skipped = rows
        rep.notes.append(f"source unchanged since the last load ({rows:,} rows, same content): "
                         "bronze not appended, silver unchanged")

    def _not_yet_landed(self, rep: TableReport, bronze: str, data: pa.Table, key: list[str]) -> pa.Table:
        """Rows of a full read whose key does not already hold the same content in bronze (latest version)."""
        import polars as pl

        if not self.catalog.table_exists(bronze):
            return data
        tbl = self.catalog.load_table(bronze)
        names = tbl.schema().column_names
        if ROW_HASH not in names or not all(k in names and k in data.column_names for k in key):
            return data
        seen = tbl.scan(selected_fields=(*key, ROW_HASH, LOAD_ID)).to_arrow()
        if seen.num_rows == 0:
            return data
        latest = latest_per_key(cast(pl.DataFrame, pl.from_arrow(seen)).sort(LOAD_ID), key, None).select([*key, ROW_HASH])
        new = cast(pl.DataFrame, pl.from_arrow(data.select([*key, ROW_HASH]))).with_row_index("__eai_i")
        try:
            landed = new.join(latest, on=[*key, ROW_HASH], how="semi", nulls_equal=True)
        except pl.exceptions.PolarsError:  # key types changed since: compare nothing, land all
            return data
        if landed.height:
            keep = np.ones(data.num_rows, dtype=bool)
            keep[landed.get_column("__eai_i").to_numpy()] = False
            rep.bronze_skipped = landed.height
            rep.notes.append(f"{landed.height:,} of {data.num_rows:,} records already in bronze with the same "
                             "key and content: not appended again")
            data = data.filter(pa.array(keep))
        return data

    # ------------------------------------------------------------------ silver
    def _silver(self, rep: TableReport, spec: SilverTable, discovered: DiscoveredSchema | None) -> None:
        silver, quarantine = f"silver.{spec.name}", f"quarantine.{spec.name}"
        if not self.catalog.table_exists(rep.bronze):
            return
        btbl = self.catalog.load_table(rep.bronze)
        consumed = self._silver_watermark(silver)
        last_load = int(T.last_property(btbl, "eai.load_id") or 0)
        if last_load <= consumed:
            return
        mode = rep.mode or silver_mode(spec, full=False)
        # a replacing table takes the latest full read only; older unconsumed reads are superseded
        # pyiceberg's predicates are pydantic models: mypy sees their field-made __init__, not (term, literal)
        row_filter = EqualTo(LOAD_ID, last_load) if mode == "replace" else GreaterThan(LOAD_ID, consumed)  # type: ignore[call-arg, arg-type]
        bronze_rows = btbl.scan(row_filter=row_filter).to_arrow()
        rep.silver_in = bronze_rows.num_rows
        source_types = {c.name: c.type for c in discovered.columns} if discovered else {
            f.name: f.type for f in bronze_rows.schema}
        rep.renamed = renamed_columns(spec, source_types)
        references = self._references(spec)
        chunks = [bronze_rows.slice(i, SILVER_CHUNK_ROWS) for i in range(0, max(bronze_rows.num_rows, 1), SILVER_CHUNK_ROWS)]
        results: list[SilverResult] = []
        with self.progress.step(f"silver {silver}", total=len(chunks)) as advance:
            args = [(c, spec, source_types, self.run_id, rep.source, references) for c in chunks]
            for res in self.executor.map(silver_chunk, args):
                results.append(res)
                advance(1)
        good = pa.concat_tables([r.good for r in results], promote_options="permissive")
        quarantined = pa.concat_tables([r.quarantine for r in results])
        duplicates = sum(r.duplicates for r in results)
        if len(results) > 1 and spec.primary_key and good.num_rows:
            import polars as pl
            before = good.num_rows
            good = latest_per_key(cast(pl.DataFrame, pl.from_arrow(good)), spec.primary_key, spec.sequence_by).to_arrow()
            duplicates += before - good.num_rows
        if spec.enrich and good.num_rows:
            good = self._enrich(rep, spec, good)
        rules = _sum_outcomes([r.rules for r in results])
        rep.warnings = {r.rule: r.failed for r in rules if r.action == "warn" and r.failed}
        props = {"bronze_load_id": last_load}

        # quarantine first: on a re-run after a crash it is skipped when already committed
        if quarantined.num_rows:
            T.evolve(self.catalog, quarantine, QUARANTINE_SCHEMA)
            qtbl = self.catalog.load_table(quarantine)
            if self._silver_watermark(quarantine) < last_load:
                fresh = _not_yet_quarantined(qtbl, quarantined)
                if fresh.num_rows < quarantined.num_rows:
                    rep.notes.append(f"{quarantined.num_rows - fresh.num_rows:,} rejected rows were already in "
                                     f"{quarantine} (same record, same rule): not added again")
                if fresh.num_rows:
                    T.append(self.catalog, quarantine, fresh, run_id=self.run_id, properties=props)
                else:
                    self._advance_watermark(quarantine, props)
        crash_point(f"after_quarantine:{silver}")
        rep.quarantined = quarantined.num_rows
        rep.quarantine_reasons = _count_by(quarantined, "_eai_rule")
        rep.duplicates = duplicates

        tbl, changes = T.evolve(self.catalog, silver, good.schema)
        rep.schema_changes += [{**c.to_dict(), "table": silver} for c in changes if c.kind != "created"]
        removed = [c for c in changes if c.kind == "removed"]
        if removed and spec.on_removed_column == "fail":
            from eai_ray.errors import IncompatibleSchemaChange
            raise IncompatibleSchemaChange(f"columns {[c.column for c in removed]} disappeared from {rep.source}",
                                           table=silver)
        rep.silver_rows_before = T.row_count(tbl)
        if mode == "merge":
            stats = T.merge(self.catalog, silver, good, keys=spec.primary_key, sequence_by=spec.sequence_by,
                            run_id=self.run_id, properties=props)
            rep.inserted, rep.updated, rep.stale = stats.inserted, stats.updated, stats.stale
            rep.unchanged = stats.unchanged
        elif mode == "replace":
            replaced = T.replace(self.catalog, silver, good, run_id=self.run_id, properties=props)
            rep.inserted, rep.deleted, rep.unchanged = replaced.inserted, replaced.deleted, replaced.unchanged
        else:
            T.append(self.catalog, silver, good, run_id=self.run_id, properties=props)
            rep.inserted = good.num_rows
        if rep.inserted + rep.updated + rep.deleted == 0:
            # nothing changed in silver, but the watermark must still move past this load
            self._advance_watermark(silver, props)

        stbl = self.catalog.load_table(silver)
        rep.silver_rows_after = T.row_count(stbl)
        renames = [{"kind": "renamed", "column": src, "new": dst} for src, dst in rep.renamed.items()]
        self.store.record_schema(silver, _schema_dict(stbl.schema().as_arrow()), run_id=self.run_id,
                                 changes=[c.to_dict() for c in changes] + renames)
        first = results[0] if results else None
        if first:
            self.store.record_edges([(rep.bronze, src, silver, dst, "coerce" if src == dst else "map")
                                     for dst, src in first.column_map.items()
                                     if src in btbl.schema().column_names], run_id=self.run_id)
        q = qengine.score_table(silver=good, rows_in=rep.silver_in, quarantined=rep.quarantined, rules=rules,
                                freshness=spec.freshness, now=self.clock())
        self.store.record_quality(self.run_id, silver, q)
        rep.quality = qengine.overall(q)
        metrics.rows_written(self.cfg.name, silver, "silver", rep.accepted)
        metrics.rows_quarantined(self.cfg.name, silver, rep.quarantined)
        metrics.quality_score(self.cfg.name, silver, rep.quality.get("overall", 1.0))

    def _enrich(self, rep: TableReport, spec: SilverTable, good: pa.Table) -> pa.Table:
        """LLM enricher (issue 4): new columns on the good rows, as a Ray Data stage when Ray runs."""
        from eai_ray.processing import enrich as E

        with self.progress.step(f"enrich silver.{spec.name}", total=1) as advance:
            if self.executor.name == "ray":
                good = E.enrich_with_ray(good, spec.enrich)
            else:
                good = E.enrich_table(good, spec.enrich, E.resolve_client())
            advance(1)
        self.store.record_edges([(f"silver.{spec.name}", src, f"silver.{spec.name}", dst, "enrich")
                                 for src, dst in E.output_columns(spec.enrich)], run_id=self.run_id)
        return good

    def _silver_watermark(self, silver: str) -> int:
        if not self.catalog.table_exists(silver):
            return 0
        tbl = self.catalog.load_table(silver)
        return max(int(T.last_property(tbl, "eai.bronze_load_id") or 0),
                   int(tbl.properties.get("eai.bronze_load_id", 0)))

    def _advance_watermark(self, silver: str, props: dict[str, Any]) -> None:
        tbl = self.catalog.load_table(silver)
        tx = tbl.transaction()
        tx.set_properties({"eai.bronze_load_id": str(props["bronze_load_id"])})
        tx.commit_transaction()

    def _references(self, spec: SilverTable) -> dict[str, pa.Array]:
        out = {}
        for rule in spec.rules:
            if rule.references:
                tname, col = rule.references.rsplit(".", 1)
                full = tname if "." in tname else f"silver.{tname}"
                if self.catalog.table_exists(full):
                    data = self.catalog.load_table(full).scan(selected_fields=(col,)).to_arrow()
                    out[rule.references] = data.column(col).combine_chunks()
        return out

    # ------------------------------------------------------------------ gold
    def _gold(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.cfg.gold:
            return out
        order = gold_order(self.cfg.gold)
        with self.progress.step("gold models", total=len(order)) as advance:
            for model in order:
                t1 = time.perf_counter()
                rep: dict[str, Any] = {"name": f"gold.{model.name}", "status": "ok"}
                try:
                    rep.update(self._gold_one(model))
                except EaiError as exc:
                    rep.update(status="failed", error=exc.to_dict())
                    self.progress.log(f"[red]gold.{model.name}: {exc}")
                rep["seconds"] = round(time.perf_counter() - t1, 3)
                metrics.stage_seconds(self.cfg.name, rep["name"], "gold", rep["seconds"])
                out.append(rep)
                advance(1)
        return out

    def _gold_one(self, model) -> dict[str, Any]:
        schema = self._lakehouse_schema()
        query = validate_select(model.sql, schema)
        inputs = {t: self.catalog.load_table(t).scan().to_arrow() for t in query.tables}
        result = run_select(query, inputs)
        name = f"gold.{model.name}"
        try:
            T.evolve(self.catalog, name, result.schema)
        except EaiError:
            self.catalog.drop_table(name)  # gold is derived: a changed model rebuilds it
            T.evolve(self.catalog, name, result.schema)
        T.overwrite(self.catalog, name, result, run_id=self.run_id,
                    properties={"inputs": ",".join(query.tables)})
        edges = [(src_t, src_c, name, dst, "sql") for src_t, src_c, dst in column_lineage(query, schema)]
        self.store.record_edges(edges, run_id=self.run_id)
        self.store.record_schema(name, _schema_dict(result.schema), run_id=self.run_id)
        metrics.rows_written(self.cfg.name, name, "gold", result.num_rows)
        return {"rows": result.num_rows, "inputs": query.tables}

    def _lakehouse_schema(self) -> dict[str, dict[str, str]]:
        out = {}
        for ns in ("silver", "gold"):
            for ident in self.catalog.list_tables(ns):
                full = ".".join(ident)
                out[full] = {f.name: str(f.type) for f in self.catalog.load_table(full).schema().as_arrow()}
        return out


# ---------------------------------------------------------------------- helpers
def crash_point(name: str) -> None:
    """Fault injection for crash-recovery tests: the process dies here when EAI_INJECT_CRASH names this point."""
    import os

    if settings().inject_crash == name:
        os._exit(77)


def _schema_dict(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def _count_by(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column(column).combine_chunks())
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def _not_yet_quarantined(qtbl, rows: pa.Table) -> pa.Table:
    """The rejected rows that quarantine does not hold yet (same source, rule and record text)."""
    import polars as pl

    cols = ["_eai_source", "_eai_rule", "_eai_record"]
    if qtbl.current_snapshot() is None:
        return rows
    held = cast(pl.DataFrame, pl.from_arrow(qtbl.scan(selected_fields=tuple(cols)).to_arrow()))
    if held.height == 0:
        return rows
    new = cast(pl.DataFrame, pl.from_arrow(rows.select(cols))).with_row_index("__eai_i")
    dup = new.join(held.unique(), on=cols, how="semi", nulls_equal=True).get_column("__eai_i").to_numpy()
    if len(dup) == 0:
        return rows
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[dup] = False
    return rows.filter(pa.array(keep))


def _sum_outcomes(groups: list[list]) -> list:
    from eai_ray.processing.silver import RuleOutcome

    acc: dict[str, RuleOutcome] = {}
    for group in groups:
        for r in group:
            if r.rule in acc:
                acc[r.rule].failed += r.failed
                acc[r.rule].evaluated += r.evaluated
            else:
                acc[r.rule] = RuleOutcome(r.rule, r.check, r.action, r.column, r.failed, r.evaluated)
    return list(acc.values())


def _order_by_references(jobs: list) -> list:
    """Silver tables that others reference (rule `references`) run first."""
    names = {spec.name for _, spec, _ in jobs}

    def deps(spec):
        return {r.references.rsplit(".", 1)[0].split(".")[-1] for r in spec.rules if r.references} & names

    done: set[str] = set()
    ordered, pending = [], list(jobs)
    while pending:
        ready = [j for j in pending if deps(j[1]) <= done] or pending[:1]
        for j in ready:
            ordered.append(j)
            done.add(j[1].name)
            pending.remove(j)
    return ordered


def _is_ray_task_error(exc: Exception) -> bool:
    return type(exc).__name__ in ("RayTaskError", "RayActorError") or type(exc).__name__.startswith("RayTaskError")


def _error_from(d: dict[str, Any]) -> EaiError:
    import eai_ray.errors as errors

    cls = getattr(errors, d.get("type", ""), EaiError)
    if not (isinstance(cls, type) and issubclass(cls, EaiError)):
        cls = EaiError
    err = cls.__new__(cls)
    EaiError.__init__(err, d.get("message", "source check failed"))
    return err
