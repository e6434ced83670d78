"""The CDC consumer loop: source -> micro-batches -> sink, then acknowledge the source.

A plain class (its clock, source and sink are arguments), driven by ``actors/cdc_actor.py``.

- start: snapshot the tables that never completed one (a fresh slot, or a TEMPORARY slot for
  tables added later), then stream from where every table's committed position allows;
- micro-batches hold whole transactions and are flushed at ``flush_rows`` events or when the
  oldest buffered event is ``flush_seconds`` old; while the sink writes, nothing is read, so a
  slow sink holds the source back (backpressure) instead of growing memory;
- the source is acknowledged (PostgreSQL ``flush_lsn``) only after the Iceberg commits;
- ``SlotLost`` is remedied by an incremental re-snapshot of only the tables that slot fed
  (``on_slot_lost: resnapshot``), or stops the consumer (``fail``).

Example::

    consumer = CdcConsumer(source, sink, flush_rows=5000, flush_seconds=0.5)
    consumer.run(stop=threading.Event())
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eai_ray import retry
from eai_ray.errors import EaiError, SlotLost, is_transient
from eai_ray.ingestion.cdc.events import ZERO, BadEvent, ChangeEvent, Heartbeat, TxEnd, commit_of, end_of
from eai_ray.ingestion.cdc.trace import trace

log = logging.getLogger(__name__)


@dataclass
class CdcStatus:
    state: str = "starting"  # starting | snapshot | streaming | retrying | stopped | failed
    position: str | None = None
    resume: str | None = None
    events: int = 0
    transactions: int = 0
    flushes: int = 0
    snapshot_rows: int = 0
    quarantined: int = 0
    rejected: int = 0
    skipped: int = 0
    restarts: int = 0
    resnapshots: list[str] = field(default_factory=list)
    last_commit_at: str | None = None
    last_source_commit: str | None = None
    last_error: dict[str, Any] | None = None
    buffered: int = 0
    events_per_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list)  # commit-to-visible of recent events

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        lat = sorted(self.latency_ms)
        d.pop("latency_ms")
        if lat:
            d["latency_p50_ms"] = round(lat[len(lat) // 2], 1)
            d["latency_p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)
        return d


class CdcConsumer:
    def __init__(self, source, sink, *, flush_rows: int = 5_000, flush_seconds: float = 0.5,
                 on_slot_lost: str = "resnapshot", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 latency_window: int = 20_000) -> None:
        self.source = source
        self.sink = sink
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.on_slot_lost = on_slot_lost
        self.clock = clock
        self.wall = wall
        self.status = CdcStatus()
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._pending: list[ChangeEvent] = []  # whole transactions, ready to flush
        self._open: list[ChangeEvent] = []  # the transaction being read
        self._bad: list[BadEvent] = []
        self._last_tx: TxEnd | None = None
        self._oldest: float | None = None
        self._rate: deque[tuple[float, int]] = deque(maxlen=50)
        self._versions: dict[str, int] = {}
        self._writer: _Writer | None = None
        self._acked: str | None = None

    # ------------------------------------------------------------------ setup
    def start(self) -> None:
        self.source.prepare()
        self.sink.prepare(self.source.tables())
        if getattr(self.source, "has_slot_state", False):
            status = self.source.slot_status()
            if status in (None, "lost"):
                started = any(self.sink.watermark(self.sink.silver(t)) != ZERO for t in self.sink.specs)
                if started and self.on_slot_lost == "fail":
                    raise SlotLost(f"CDC source '{self.sink.source}': slot lost", tables=list(self.sink.specs))
                self.resnapshot(list(self.sink.specs), new_main_slot=True)
                return
        need = self.sink.needs_snapshot()
        if need:
            self.resnapshot(need, new_main_slot=False)

    def resnapshot(self, tables: list[str], *, new_main_slot: bool) -> None:
        """Consistent snapshot of `tables` only; their silver is replaced, bronze logs op 'r' rows."""
        self.status.state = "snapshot"
        if new_main_slot or tables:
            self.status.resnapshots.append(",".join(tables))
        for chunk in self.source.snapshot(tables, new_main_slot=new_main_slot):
            stats = self.sink.write_snapshot(chunk, resume=chunk.resume)
            self.status.snapshot_rows += stats.bronze_rows
            self.status.quarantined += stats.quarantined

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event, *, max_retries: int | None = None) -> None:
        """Consume until `stop` is set; transient failures reconnect with backoff."""
        attempt = 0
        while not stop.is_set():
            try:
                self.start()
                self.status.state = "streaming"
                attempt = 0
                self._consume(stop)
            except SlotLost as exc:
                self.status.last_error = exc.to_dict()
                if self.on_slot_lost != "resnapshot":
                    self.status.state = "failed"
                    raise
                self.resnapshot(list(exc.context.get("tables") or self.sink.specs), new_main_slot=True)
            except Exception as exc:  # noqa: BLE001 - classified below
                self._reset_buffers()
                err = exc.to_dict() if isinstance(exc, EaiError) else {"type": type(exc).__name__, "message": str(exc)}
                self.status.last_error = err
                if not (is_transient(exc) or _driver_disconnect(exc)):
                    self.status.state = "failed"
                    raise
                attempt += 1
                self.status.restarts += 1
                if max_retries is not None and attempt > max_retries:
                    self.status.state = "failed"
                    raise
                self.status.state = "retrying"
                log.warning("CDC source %s: %s; reconnecting", self.sink.source, err.get("message"))
                stop.wait(retry.CDC_RECONNECT.wait_before(attempt))
            finally:
                try:
                    self.source.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
        self.status.state = "stopped"

    def _reset_buffers(self) -> None:
        self._pending, self._open, self._bad = [], [], []
        self._last_tx, self._oldest = None, None
        self.status.buffered = 0

    def _consume(self, stop: threading.Event) -> None:
        _pos, resume = self.sink.resume_point()
        trace("consumer.resume", source=getattr(self.sink, "source", None), position=_pos, resume=resume,
              restarts=self.status.restarts)
        self._writer = _Writer(self)
        self._writer.start()
        try:
            self._read(stop, resume)
        finally:
            self._writer.close()
            self._writer.raise_error()
            self._ack()

    def _read(self, stop: threading.Event, resume: str | None) -> None:
        assert self._writer is not None  # _consume starts the writer before it reads
        last_commit = None
        versions, open_, n = self._versions, self._open, 0
        for item in self.source.stream(resume):
            if type(item) is ChangeEvent:  # the hot path: one row change inside a transaction
                # a driver that reconnects by itself may resend a transaction from its start
                if self._pending and item.position <= self._pending[-1].position:
                    continue
                if open_ and item.position <= open_[-1].position:
                    open_[:] = [x for x in open_ if x.position < item.position]
                if versions.get(item.table) != item.schema_version:
                    self._check_schema(item)
                open_.append(item)
                if self._oldest is None:
                    self._oldest = self.clock()
                n += 1
                if n & 511:  # every 512 events: stop, writer errors, the time-based flush
                    continue
            elif isinstance(item, TxEnd):
                if last_commit is not None and item.commit <= last_commit:
                    open_.clear()
                    continue
                last_commit = item.commit
                self._pending.extend(open_)
                open_.clear()
                self._last_tx = item
                self.status.transactions += 1
                self.status.buffered = len(self._pending)
                if len(self._pending) >= self.flush_rows:
                    self.flush()
            elif isinstance(item, BadEvent):
                self._bad.append(item)
            elif isinstance(item, Heartbeat):
                if not self._pending and not open_ and not self._bad and self._writer.idle():
                    self.source.ack(item.resume)  # idle: let the source free its log
            if stop.is_set():
                break
            self._writer.raise_error()
            self._ack()
            if self._last_tx is not None and self._oldest is not None \
                    and self.clock() - self._oldest >= self.flush_seconds:
                self.flush()
        if self._last_tx is not None:
            self.flush(wait=True)

    def _ack(self) -> None:
        """Acknowledge what the writer committed (on the reader's thread: the stream is not thread-safe)."""
        assert self._writer is not None  # _consume starts the writer before it reads
        done = self._writer.committed
        if done is not None and done != self._acked:
            self.source.ack(done)
            self._acked = done

    def _check_schema(self, e: ChangeEvent) -> None:
        known = self._versions.get(e.table)
        if known is not None and e.schema_version > known:
            # a source schema change: rediscover types; the sink evolves the tables on its next write
            if self._pending:
                self.flush(wait=True)
            else:
                assert self._writer is not None  # _consume starts the writer before it reads
                self._writer.wait()
            refresh = getattr(self.source, "refresh", None)
            if refresh:
                self.sink.refresh(refresh())
        self._versions[e.table] = max(known or 0, e.schema_version)

    def flush(self, wait: bool = False) -> None:
        """Hand buffered whole transactions to the writer (blocks while it is busy: backpressure)."""
        tx = self._last_tx
        if tx is None:
            return
        assert self._writer is not None  # _consume starts the writer before it reads
        batch = (self._pending, self._bad, tx)
        self._pending, self._bad, self._last_tx = [], [], None
        self._oldest = self.clock() if self._open else None
        self.status.buffered = 0
        self._writer.put(batch)
        if wait:
            self._writer.wait()
            self._writer.raise_error()
            self._ack()

    def _write(self, batch) -> None:
        """Commit one batch to Iceberg (writer thread); the reader acknowledges the source after it."""
        events, bad, tx = batch
        end = end_of(tx.commit)
        stats = self.sink.write(events, bad=bad, end=end, resume=tx.resume)
        now_wall = self.wall()
        last = None
        ms: float | None = 0.0
        lat = self._latency
        for e in events:  # one datetime per transaction: compute each once
            ct = e.commit_time
            if ct is not last:
                last = ct
                ms = (now_wall - ct).total_seconds() * 1000 if ct is not None else None
            if ms is not None:
                lat.append(ms)
        s = self.status
        s.events += len(events)
        s.flushes += 1
        s.quarantined += stats.quarantined
        s.rejected += stats.rejected
        s.skipped += stats.skipped
        s.position, s.resume = end, tx.resume
        s.last_commit_at = now_wall.isoformat()
        s.last_source_commit = tx.commit_time.isoformat() if tx.commit_time else None
        t = self.clock()
        self._rate.append((t, s.events))
        if len(self._rate) > 1 and t > self._rate[0][0]:
            s.events_per_s = round((s.events - self._rate[0][1]) / (t - self._rate[0][0]), 1)
        s.latency_ms = list(self._latency)[-2000:]

    def latencies(self) -> list[float]:
        return list(self._latency)


class _Writer(threading.Thread):
    """Commits batches in order while the reader decodes the next one; one batch may wait."""

    def __init__(self, consumer: CdcConsumer) -> None:
        super().__init__(name="eai-cdc-writer", daemon=True)
        self.consumer = consumer
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.committed: str | None = None

    def run(self) -> None:
        while True:
            batch = self.queue.get()
            try:
                if batch is None:
                    return
                if self.error is None:
                    self.consumer._write(batch)
                    self.committed = batch[2].resume
            except BaseException as exc:  # noqa: BLE001 - handed to the reader thread
                self.error = exc
            finally:
                self.queue.task_done()

    def put(self, batch) -> None:
        while True:
            self.raise_error()
            try:
                self.queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def idle(self) -> bool:
        return self.queue.unfinished_tasks == 0

    def wait(self) -> None:
        self.queue.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(None)
        self.join()


def _driver_disconnect(exc: BaseException) -> bool:
    """Driver errors that mean 'connection lost' (psycopg2/pymysql raise their own types)."""
    name = type(exc).__name__
    return name in ("OperationalError", "InterfaceError", "ConnectionResetError", "BrokenPipeError",
                    "CommitFailedException", "StreamLostError") or isinstance(exc, OSError)


# ---------------------------------------------------------------------- wiring from the pipeline YAML
def cdc_sources(cfg) -> list:
    """Sources of the pipeline that have a `cdc:` block."""
    return [s for s in cfg.sources if getattr(s, "cdc", None) is not None]


def build_source(cfg, source):
    """The CDC reader of a source; a ``"*"`` table entry is expanded to the tables the database lists now
    (a table created later is captured after the consumer restarts)."""
    from eai_ray.config import expand_tables, has_wildcard

    if has_wildcard(source):
        from eai_ray.ingestion.registry import connector_for

        conn = connector_for(source)
        try:
            source = expand_tables(source, conn.list_tables())
        finally:
            conn.close()
    if source.kind == "postgres":
        from eai_ray.ingestion.cdc.postgres import PostgresCdcSource
        return PostgresCdcSource(source, pipeline=cfg.name)
    if source.kind in ("mysql", "mariadb"):
        from eai_ray.ingestion.cdc.mysql import MySQLCdcSource
        return MySQLCdcSource(source, pipeline=cfg.name)
    from eai_ray.errors import CdcSetupError
    raise CdcSetupError(f"source '{source.name}' ({source.kind}) has no log-based CDC",
                        source=source.name, expected="a postgres, mysql or mariadb source")


def build_consumer(cfg, source_name: str, *, catalog=None) -> CdcConsumer:
    """The consumer for one source of a pipeline: its CDC source, the Iceberg sink and the settings."""
    from eai_ray.config import CdcConfig

    source = cfg.source(source_name)
    cdc = source.cdc or CdcConfig()
    sink = build_sink(cfg, source_name, catalog=catalog)
    reader = build_source(cfg, source)
    if cdc.transport == "kafka":  # a consumer-group reader of the topics the publisher fills
        from eai_ray.ingestion.cdc.kafka import KafkaCdcSource
        assert cdc.kafka_bootstrap is not None  # CdcConfig requires it for transport 'kafka'
        reader = KafkaCdcSource(reader, bootstrap=cdc.kafka_bootstrap, topic_prefix=cdc.topic_prefix,
                                partitions=cdc.kafka_partitions,
                                source_name=source_name, pipeline=cfg.name)
    return CdcConsumer(reader, sink, flush_rows=cdc.flush_rows,
                       flush_seconds=cdc.flush_seconds, on_slot_lost=cdc.on_slot_lost)


def build_sink(cfg, source_name: str, *, catalog=None):
    """The Iceberg sink of one CDC source (also built inside the sink process)."""
    from eai_ray.config import CdcConfig
    from eai_ray.orchestration.cdc_sink import CdcSink
    from eai_ray.storage.catalog import open_catalog

    cdc = cfg.source(source_name).cdc or CdcConfig()
    silver = {t.source.split(".", 1)[1]: t for t in cfg.silver if t.source.split(".", 1)[0] == source_name}
    return CdcSink(catalog or open_catalog(cfg), source=source_name, silver=silver, deletes=cdc.deletes,
                   scd2=cdc.scd2, run_id=f"cdc-{cfg.name}-{source_name}")


def build_publisher(cfg, source_name: str):
    """The Kafka publisher of one source (``cdc.transport: kafka``): database log -> topics."""
    from eai_ray.config import CdcConfig
    from eai_ray.errors import CdcSetupError
    from eai_ray.ingestion.cdc.kafka import KafkaPublisher

    source = cfg.source(source_name)
    cdc = source.cdc or CdcConfig()
    if cdc.transport != "kafka":
        raise CdcSetupError(f"source '{source_name}' does not use the Kafka transport",
                            source=source_name, expected="cdc.transport: kafka")
    assert cdc.kafka_bootstrap is not None  # CdcConfig requires it for transport 'kafka'
    reader = build_source(cfg, source)

    sinks: list = []

    def consumer_committed() -> tuple[str, str | None]:  # (position, resume) the consumer holds in Iceberg
        if not sinks:
            sinks.append(build_sink(cfg, source_name))
            sinks[0].prepare(reader.tables())
        return sinks[0].resume_point(fresh=True)

    def committed_resume() -> str | None:  # where the consumer's snapshot (or stream) committed up to
        pos, resume = consumer_committed()
        if pos == ZERO or not resume:
            return None
        if resume.startswith("{"):
            # the consumer's Kafka offsets token: it carries the source's own resume (a MariaDB GTID)
            # of the transaction it ends at. Without it, a broker that lost its log (control topic
            # empty) left the publisher with no start at all: it waited forever, publishing nothing.
            try:
                return json.loads(resume).get("source") or None
            except ValueError:
                return None
        return resume

    def source_head():  # the source's current position, for stall detection: (int, text)
        try:
            lag = reader.lag()
        except Exception:  # noqa: BLE001 - the source is down: no head, no stall verdict
            return None
        if "server_seq" in lag:  # MariaDB/MySQL: @@gtid_binlog_pos
            return int(lag["server_seq"]), str(lag.get("gtid_binlog_pos"))
        if "current_wal_lsn" in lag:  # PostgreSQL: pg_current_wal_lsn()
            return int(lag["current_wal_lsn"], 16), lag["current_wal_lsn"]
        return None

    def durable_commit() -> int | None:  # the source commit the consumer holds in Iceberg
        pos, _resume = consumer_committed()
        return commit_of(pos) if pos != ZERO else None

    return KafkaPublisher(reader, bootstrap=cdc.kafka_bootstrap, topic_prefix=cdc.topic_prefix,
                          partitions=cdc.kafka_partitions,
                          durable_commit=durable_commit if getattr(reader, "has_slot_state", False) else None,
                          source_name=source_name, pipeline=cfg.name, committed_resume=committed_resume,
                          consumer_started=lambda: consumer_committed()[0] != ZERO,
                          source_head=source_head, stall_seconds=getattr(cdc, "stall_seconds", 60.0))


# ---------------------------------------------------------------------- a pipeline's CDC, as a whole
def select_cdc_sources(cfg, only: str | None = None, *, file: str | None = None) -> list:
    """The sources with a `cdc:` block (only the one named `only`, when given); ConfigError when none is."""
    from eai_ray.errors import ConfigError

    sources = [s for s in cdc_sources(cfg) if not only or s.name == only]
    if not sources:
        raise ConfigError("no source with a 'cdc:' block" + (f" named '{only}'" if only else ""),
                          file=file, field="sources[].cdc", expected="cdc: {} on a postgres or mariadb source")
    return sources


def run_foreground(cfg, sources, *, tick_s: float = 5.0, join_s: float = 30.0,
                   on_tick: Callable[[list[dict[str, Any]]], None] | None = None,
                   on_interrupt: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Consume `sources` in this process, without Ray, until every consumer ends or Ctrl-C.

    One thread per consumer (and per Kafka publisher, ``cdc.transport: kafka``). Every `tick_s`
    seconds `on_tick` gets each source's status; Ctrl-C calls `on_interrupt` and stops them cleanly.
    Returns each source's last status: [{source, **CdcStatus}].
    """
    from eai_ray.runtime import tune_gc_for_streaming

    stop = threading.Event()
    consumers = [build_consumer(cfg, s.name) for s in sources]
    tune_gc_for_streaming()  # consuming is this process's only job
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in consumers]
    threads += [threading.Thread(target=build_publisher(cfg, s.name).run, args=(stop,), daemon=True)
                for s in sources if s.cdc is not None and s.cdc.transport == "kafka"]
    for t in threads:
        t.start()

    def statuses() -> list[dict[str, Any]]:
        return [{"source": s.name, **c.status.to_dict()} for s, c in zip(sources, consumers)]

    try:
        while any(t.is_alive() for t in threads):
            stop.wait(tick_s)
            if on_tick is not None:
                on_tick(statuses())
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
    stop.set()
    for t in threads:
        t.join(join_s)
    return statuses()
