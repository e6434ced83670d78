"""Kafka transport for CDC: a publisher (source -> per-table topics) and a Kafka-backed CdcSource.

Publisher (``KafkaPublisher``): reads the log-based source and writes every change event, as JSON
with its position, to ``<prefix>.<source>.<table>`` keyed by the primary key, plus one marker per
source transaction to ``<prefix>.<source>._tx`` (commit, event count, resume token, bad events).
A batch of source transactions is one Kafka transaction (``transactional_id`` stable per source:
a restarted publisher fences the old one); the source (slot/GTID) is acknowledged only after
the Kafka transaction commits. A crash in between resends the transaction: harmless, below.

Consumer side (``KafkaCdcSource``): a CdcSource the ordinary ``CdcConsumer`` drives. It reads the
topics with ``isolation_level=read_uncommitted`` and no auto commit, reassembles whole source
transactions in commit order from the markers (a transaction is handed on only when its marker
and all of its events have arrived, so the broker's transaction state decides nothing), drops
repeats, and hands a ``TxEnd`` whose ``resume`` token holds the Kafka offsets to restart from.
The sink commits that token in the SAME Iceberg snapshot summary as the data, and on restart
``stream(resume)`` seeks to it; the group's committed
offsets are only a hint (used when no table holds a token yet). The initial snapshot and the
table metadata come from the wrapped database source (the publisher waits for its slot).

Example::

    pub = KafkaPublisher(PostgresCdcSource(src, pipeline="p"), bootstrap="127.0.0.1:9092",
                         topic_prefix="eai.cdc", source_name="pg", pipeline="p")
    pub.run(stop)  # in its own process/actor
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

from eai_ray import retry
from eai_ray.errors import SourceUnavailable
from eai_ray.ingestion.cdc import kafka_compat
from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, Heartbeat, TxEnd
from eai_ray.ingestion.cdc.stall import StallDetector
from eai_ray.ingestion.cdc.trace import enabled as trace_enabled
from eai_ray.ingestion.cdc.trace import producer_state, trace

log = logging.getLogger(__name__)

CONTROL = "_tx"


def topic_for(prefix: str, source: str, table: str) -> str:
    return f"{prefix}.{source}.{table}"


def control_topic(prefix: str, source: str) -> str:
    return f"{prefix}.{source}.{CONTROL}"


def group_id(pipeline: str, source: str) -> str:
    return f"eai-cdc-{pipeline}-{source}"


def transactional_id(pipeline: str, source: str) -> str:
    return f"eai-cdc-pub-{pipeline}-{source}"


# ---------------------------------------------------------------------- serialisation
def _default(v: Any):
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def encode_event(e: ChangeEvent) -> bytes:
    return json.dumps({"table": e.table, "op": e.op, "position": e.position, "commit": e.commit,
                       "tx_id": e.tx_id, "commit_time": e.commit_time.isoformat() if e.commit_time else None,
                       "key": e.key, "before": e.before, "after": e.after, "unchanged": list(e.unchanged),
                       "schema_version": e.schema_version}, default=_default, separators=(",", ":")).encode()


def decode_event(raw: bytes) -> ChangeEvent:
    d = json.loads(raw)
    ct = d.get("commit_time")
    return ChangeEvent(table=d["table"], op=d["op"], position=d["position"], commit=int(d["commit"]),
                       tx_id=d.get("tx_id") or "", commit_time=dt.datetime.fromisoformat(ct) if ct else None,
                       key=d.get("key") or {}, before=d.get("before"), after=d.get("after"),
                       unchanged=tuple(d.get("unchanged") or ()), schema_version=int(d.get("schema_version", 1)))


def encode_key(key: dict[str, Any]) -> bytes:
    return json.dumps(key, sort_keys=True, default=_default, separators=(",", ":")).encode()


def encode_marker(tx: TxEnd, events: int, bad: list[BadEvent]) -> bytes:
    return json.dumps({"commit": tx.commit, "resume": tx.resume, "tx_id": tx.tx_id, "events": events,
                       "commit_time": tx.commit_time.isoformat() if tx.commit_time else None,
                       "bad": [{"reason": b.reason, "raw": b.raw, "position": b.position, "table": b.table}
                               for b in bad]}, default=_default).encode()


def _ensure_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    """Create missing topics: the control topic (first) with one partition, each table topic with
    `partitions`; a table topic with fewer partitions gets more (no ordering is lost: the consumer
    reassembles transactions by source commit, not by Kafka order)."""
    from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
    from kafka.errors import TopicAlreadyExistsError
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="eai-cdc-admin")
    try:
        have = set(admin.list_topics())
        want = {n: (1 if n.endswith("." + CONTROL) else partitions) for n in names}
        for n in [n for n in names if n not in have]:
            try:
                admin.create_topics([NewTopic(n, num_partitions=want[n], replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
        existing = [n for n in names if n in have and want[n] > 1]
        if existing:
            for n, count in _partition_counts(admin, existing).items():
                if 0 < count < want[n]:
                    log.warning("topic %s: %d partitions, raising to %d", n, count, want[n])
                    admin.create_partitions({n: NewPartitions(total_count=want[n])})
    finally:
        admin.close()


def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """How many partitions each topic has now (fresh metadata)."""
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="eai-cdc-admin")
    try:
        return _partition_counts(admin, names)
    finally:
        admin.close()


def _partition_counts(admin, names: list[str]) -> dict[str, int]:
    return {d.get("name") or d.get("topic"): len(d.get("partitions") or []) for d in admin.describe_topics(names)}


# ---------------------------------------------------------------------- publisher
class KafkaPublisher:
    """Database log -> Kafka topics, transactionally; acks the source after the Kafka commit.

    Stall detection: with ``source_head`` (the source's current position as an int: MariaDB GTID
    sequence, PostgreSQL WAL LSN), a watchdog thread checks every ``check_every_s`` whether the
    publisher has made no progress for ``stall_seconds`` while the source moved beyond what it
    published (``eai_ray.ingestion.cdc.stall``). A stall is logged, counted
    (``eai_cdc_publisher_stalls``), shown by ``status()`` (state ``stalled`` and its evidence),
    and the publisher restarts from its resume point.
    """

    def __init__(self, source, *, bootstrap: str, topic_prefix: str, source_name: str, pipeline: str,
                 batch_events: int = 2_000, batch_seconds: float = 0.05, partitions: int = 1,
                 producer_factory: Callable[..., Any] | None = None,
                 committed_resume: Callable[[], str | None] | None = None,
                 durable_commit: Callable[[], int | None] | None = None,
                 consumer_started: Callable[[], bool] | None = None,
                 source_head: Callable[[], tuple[int, str] | None] | None = None,
                 stall_seconds: float = 60.0, check_every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        # a source with a slot (PostgreSQL) is acknowledged only up to the commit the consumer
        # holds in Iceberg, not up to what the broker said it committed: a broker that loses an
        # acknowledged transaction (seen with noida-db restarting under load) costs a resend, not data
        self.durable_commit = durable_commit
        self._durable: tuple[float, int | None] = (0.0, None)
        self._published_commit = 0
        # a source without server-side state (MariaDB/MySQL: no slot) starts from the last source
        # transaction it committed to Kafka, else from where the consumer's Iceberg tables are
        self.committed_resume = committed_resume
        self.consumer_started = consumer_started  # has the consumer committed any position yet?
        self.bootstrap = bootstrap
        self.prefix = topic_prefix
        self.source_name = source_name
        self.pipeline = pipeline
        self.batch_events = batch_events
        self.batch_seconds = batch_seconds
        self.partitions = partitions
        self.end_timeout_s = 30.0  # flush + commit of one Kafka transaction, at most
        self.producer_factory = producer_factory
        self.published_tx = 0
        self.published_events = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.state = "starting"  # starting | waiting | publishing | retrying | stalled | stopped
        self.waiting_for: str | None = None
        self.resume_from: dict[str, Any] | None = None  # where the current run started, and why
        self.last_published_at: float | None = None  # wall clock
        self.source_head = source_head
        self.stall = StallDetector(stall_seconds, clock=clock)
        self.check_every_s = check_every_s if check_every_s is not None else max(0.5, min(5.0, stall_seconds / 6))
        self.last_stall: dict[str, Any] | None = None
        self._restart = threading.Event()
        self._broker_suspect = False  # restarted after a Kafka failure: resume from the consumer's position
        self._commit_conns: frozenset | None = None  # the producer's connections at its last commit
        self._producer: Any = None  # a KafkaProducer (untyped) or what producer_factory makes

    def topics(self) -> list[str]:
        return [control_topic(self.prefix, self.source_name)] + \
            [topic_for(self.prefix, self.source_name, s.name) for s in self.source.tables()]

    def _open(self):
        if self.producer_factory is not None:
            return self.producer_factory()
        from kafka import KafkaProducer
        _ensure_topics(self.bootstrap, self.topics(), self.partitions)
        p = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                          transactional_id=transactional_id(self.pipeline, self.source_name),
                          linger_ms=5, max_block_ms=20_000)
        t0 = time.monotonic()
        p.init_transactions()  # fences a previous publisher with the same id
        trace("pub.producer", source=self.source_name, init_s=round(time.monotonic() - t0, 3), **producer_state(p))
        return p

    def run(self, stop: threading.Event) -> None:
        watchdog = None
        if self.source_head is not None:
            watchdog = threading.Thread(target=self._watch, args=(stop,), name="eai-cdc-pub-watchdog", daemon=True)
            watchdog.start()
        attempt = 0
        while not stop.is_set():
            self._restart.clear()
            try:
                if self.state != "stalled":
                    self.state = "starting"
                self.source.prepare()
                if getattr(self.source, "has_slot_state", False):
                    if self.source.slot_status() in (None, "lost"):
                        self._wait("the consumer's snapshot to create the slot", legitimate=True)
                        stop.wait(0.5)
                        continue
                    start = None  # the slot remembers what was acknowledged
                    self.resume_from = {"from": "slot"}
                else:
                    start = self.start_position()
                    if start is None:
                        if self.consumer_started is None or not self.consumer_started():
                            self._wait("the consumer's initial snapshot", legitimate=True)
                        else:  # not legitimate: the stall detector reports it if the source moves on
                            self._wait("a resume point: the control topic holds no marker and the consumer's "
                                       "position carries no source resume")
                        stop.wait(0.5)
                        continue
                self.waiting_for = None
                self._producer = self._open()  # fences the previous publisher: its commits end here
                # connections as of now: a broker restart from here on (which may lose acknowledged
                # transactions) is noticed before the next commit
                self._commit_conns = kafka_compat.connection_ids(self._producer)
                if start is not None:
                    start = self.start_position() or start  # what the broker holds, after the fence
                self.stall.restarted(self._position_of(start))
                if self.state != "stalled":
                    self.state = "publishing"
                attempt = 0
                self._pump(stop, start)
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, the source resends unacked
                attempt += 1
                self.restarts += 1
                if not isinstance(exc, SourceUnavailable):  # a Kafka failure (or a stall): trust the broker less
                    self._broker_suspect = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.state != "stalled":
                    self.state = "retrying"
                trace("pub.error", source=self.source_name, error=self.last_error,
                      **(producer_state(self._producer) if self._producer is not None else {}))
                log.warning("CDC publisher %s: %s; reconnecting", self.source_name, self.last_error)
                stop.wait(retry.CDC_PUBLISH.wait_before(attempt))
            finally:
                self._close()
        self.state = "stopped"
        if watchdog is not None:
            watchdog.join(5)

    def _wait(self, why: str, *, legitimate: bool = False) -> None:
        if legitimate:
            self.stall.waiting()
        if self.state != "stalled":
            self.state = "waiting"
        if self.waiting_for != why:
            trace("pub.wait", source=self.source_name, why=why)
        self.waiting_for = why

    def _position_of(self, resume: str | None) -> int | None:
        """The source position (int) of a resume token: a MariaDB GTID's sequence number."""
        if not resume or resume.startswith("{"):
            return None
        try:
            from eai_ray.ingestion.cdc.mysql import gtid_seq
            return gtid_seq(resume)
        except ValueError:
            return None

    def _close(self) -> None:
        for closer in (lambda: self.source.close(), lambda: self._producer and self._producer.close(timeout=2)):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._producer = None

    # ------------------------------------------------------------------ stall watchdog
    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.check_every_s):
            self.check_stall()

    def check_stall(self) -> dict[str, Any] | None:
        """One watchdog step: ask the source for its head; on a new stall report it and restart."""
        try:
            assert self.source_head is not None  # the watchdog runs only for a publisher with a source_head
            got = self.source_head()
        except Exception as exc:  # noqa: BLE001 - the source is down: not a stall of ours
            log.debug("CDC publisher %s: source head unavailable: %s", self.source_name, exc)
            return None
        if got is None:
            return None
        head, head_text = got
        ev = self.stall.check(head, source_head=head_text, state=self.state, waiting_for=self.waiting_for,
                              last_error=self.last_error, published_tx=self.published_tx,
                              last_published_at=_iso(self.last_published_at), resume_from=self.resume_from)
        if ev is None:
            if self.stall.evidence is None and self.state == "stalled":
                self.state = "publishing" if self._producer is not None else "starting"
            return None
        self.state = "stalled"
        self.last_stall = {**ev, "detected_at": _iso(time.time())}
        log.warning("CDC publisher %s STALLED: nothing published for %.0f s while the source is at %s (%d "
                    "positions beyond the published %s); restarting from its resume point",
                    self.source_name, ev["stalled_for_s"], head_text, ev["behind"], ev["published_position"])
        trace("pub.stalled", source=self.source_name, **ev)
        _count_stall(self.pipeline, self.source_name)
        self.request_restart()
        return ev

    def request_restart(self) -> None:
        """Make the pump start over from the resume point (from any thread)."""
        self._restart.set()
        try:  # a reader blocked on its socket: closing the source wakes it with an error
            self.source.close()
        except Exception:  # noqa: BLE001
            pass

    def status(self) -> dict[str, Any]:
        out = {"state": self.state, "published_tx": self.published_tx, "published_events": self.published_events,
               "restarts": self.restarts, "last_error": self.last_error,
               "last_published_at": _iso(self.last_published_at),
               "published_position": self.stall.covered, "stall_seconds": self.stall.stall_seconds,
               "stalls": self.stall.stalls, "resume_from": self.resume_from}
        if self.waiting_for:
            out["waiting_for"] = self.waiting_for
        if self.state == "stalled" or self.last_stall:
            out["stall"] = self.stall.evidence or self.last_stall
        return out

    # ------------------------------------------------------------------ resume point
    def start_position(self) -> str | None:
        """Where a source without a slot (MariaDB/MySQL) starts: after the last marker committed to
        the control topic, or from the source position the consumer holds in Iceberg (its
        snapshot's GTID, or the GTID its Kafka token carries) when that is the safer start:

        - the control topic holds no marker (a broker that lost its log: before this, the
          publisher waited forever, publishing nothing, while the consumer sat at offset 0 of 0);
        - the control topic is behind the consumer (the broker lost its last acknowledged
          transactions: noida-db does when it restarts);
        - this publisher restarted after a Kafka failure (a broker restart may have lost part of
          what it acknowledged, a marker perhaps without all its events).

        The consumer's position resends at most its lag (repeats it drops) and never skips a
        change: the rule the PostgreSQL slot follows (acknowledged only up to the consumer's
        Iceberg commit). Otherwise the control topic's marker: no resend at all."""
        tail = control_tail(self.bootstrap, control_topic(self.prefix, self.source_name))
        last = tail.get("resume")
        held = self.committed_resume() if self.committed_resume else None
        if held is None:
            start, why = last, "control topic"
        elif last is None:
            start, why = held, "consumer (Iceberg): no marker on the control topic"
        elif (self._position_of(held) or 0) > (self._position_of(last) or 0):
            start, why = held, "consumer (Iceberg): ahead of the control topic"
        elif self._broker_suspect:
            start, why = held, "consumer (Iceberg): restarted after a Kafka failure"
        else:
            start, why = last, "control topic"
        self.resume_from = {"from": why if start else None, "resume": start, "control_last": last,
                            "control_end": tail.get("end"), "control_hw": tail.get("hw"),
                            "control_last_offset": tail.get("offset"), "consumer": held}
        if trace_enabled():
            head: tuple[int, str] | str | None = None
            if self.source_head is not None:
                try:
                    head = self.source_head()
                except Exception as exc:  # noqa: BLE001 - the trace only
                    head = repr(exc)
            trace("pub.resume", source=self.source_name, head=head, **self.resume_from)
        return start

    # ------------------------------------------------------------------ publishing
    def _pump(self, stop: threading.Event, start: str | None = None) -> None:
        txs: list[tuple[TxEnd, list[ChangeEvent], list[BadEvent]]] = []
        open_events: list[ChangeEvent] = []
        bad: list[BadEvent] = []
        started: float | None = None
        n = 0
        for item in self.source.stream(start):
            if stop.is_set():
                break
            if self._restart.is_set():
                raise ConnectionResetError(f"CDC publisher {self.source_name}: restart requested (stalled)")
            if isinstance(item, ChangeEvent):
                open_events.append(item)
            elif isinstance(item, BadEvent):
                bad.append(item)
            elif isinstance(item, TxEnd):
                if any(e.commit != item.commit for e in open_events):
                    # a marker must count exactly its own events, or the consumer waits forever
                    raise ConnectionResetError(f"CDC publisher {self.source_name}: events of another "
                                               f"transaction before the end of {item.commit}; restarting")
                txs.append((item, open_events, bad))
                n += len(open_events)
                open_events, bad = [], []
                if started is None:
                    started = time.monotonic()
            elif isinstance(item, Heartbeat) and not txs and not open_events:
                pos = _hex_int(item.resume)
                if pos is not None:
                    self.stall.heartbeat(pos)  # idle and caught up: the source is here
                if self.durable_commit is None or (self._durable_now() or 0) >= self._published_commit:
                    self.source.ack(item.resume)  # idle, and all that was published is durable
            if txs and (n >= self.batch_events
                        or (started is not None and time.monotonic() - started >= self.batch_seconds)):
                self.publish(txs)
                txs, n, started = [], 0, None
        if txs:
            self.publish(txs)

    def publish(self, txs: list[tuple[TxEnd, list[ChangeEvent], list[BadEvent]]]) -> None:
        """One Kafka transaction for these source transactions; then acknowledge the source."""
        p = self._producer
        conns = kafka_compat.connection_ids(p)
        if conns is not None and self._commit_conns and self._commit_conns - conns:
            # the broker connection changed since the last commit: a restarted broker may have lost
            # transactions it had acknowledged (noida-db does). Start over from the consumer's position.
            raise ConnectionResetError("kafka: broker connection changed since the last commit (it may have lost "
                                       "acknowledged transactions); resuming from the consumer's position")
        p.begin_transaction()
        try:
            ctl = control_topic(self.prefix, self.source_name)
            for tx, events, bad in txs:
                for e in events:
                    p.send(topic_for(self.prefix, self.source_name, e.table), key=encode_key(e.key),
                           value=encode_event(e))
                p.send(ctl, key=str(tx.commit).encode(), value=encode_marker(tx, len(events), bad))
            p.flush(timeout=self.end_timeout_s)
            if kafka_compat.connection_ids(p) != conns:
                # the broker restarted under the open transaction: abort it; the source resends
                raise ConnectionResetError("kafka: broker connection changed during the transaction")
            kafka_compat.end_transaction(p, commit=True, timeout_s=self.end_timeout_s)
            if kafka_compat.connection_ids(p) != conns:
                # the broker restarted while the commit was in flight: whether the transaction
                # survived is unknown, so the source is not acknowledged and resends it (a repeat
                # is dropped by the consumer; a loss would not be noticed by anyone)
                raise ConnectionResetError("kafka: broker connection changed during the commit")
        except Exception:
            try:
                kafka_compat.end_transaction(p, commit=False, timeout_s=5.0)
            except Exception:  # noqa: BLE001 - the broker may be gone; the producer is reopened
                pass
            raise
        self._commit_conns = conns
        self._broker_suspect = False
        first = self.state != "publishing" or self.stall.covered is None
        self.published_tx += len(txs)
        self.published_events += sum(len(e) for _, e, _ in txs)
        self._published_commit = txs[-1][0].commit
        self.last_published_at = time.time()
        self.stall.published(txs[-1][0].commit)
        if self.state in ("stalled", "retrying", "starting"):
            self.state = "publishing"
        if first:
            trace("pub.published", source=self.source_name, first_commit=txs[0][0].commit,
                  last_commit=txs[-1][0].commit, last_resume=txs[-1][0].resume, transactions=len(txs))
        if self.durable_commit is None:
            self.source.ack(txs[-1][0].resume)
        else:
            durable = self._durable_now()
            if durable:
                self.source.ack(f"{durable:X}")  # the transaction at `durable` itself is sent again

    def _durable_now(self, every_s: float = 2.0) -> int | None:
        """The consumer's committed source commit (read from Iceberg at most every `every_s`)."""
        at, value = self._durable
        if time.monotonic() - at >= every_s:
            assert self.durable_commit is not None  # asked only of a publisher with a durable_commit
            value = self.durable_commit()
            self._durable = (time.monotonic(), value)
        return value


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat() if ts else None


def _hex_int(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _count_stall(pipeline: str, source: str) -> None:
    try:
        from eai_ray.observability.metrics import _metric
        _metric("counter", "eai_cdc_publisher_stalls", "CDC publisher stalls detected (and restarted)").inc(
            1, tags={"pipeline": pipeline, "table": source, "layer": "kafka"})
    except Exception:  # noqa: BLE001 - a metric must never break the publisher
        pass


def committed_reader(bootstrap: str, **config):
    """A ``read_committed`` KafkaConsumer that keeps reading after an aborted transaction.

    A fetch response lists the aborted transactions of the fetched range; kafka-python skips every
    later batch of such a producer until it meets that transaction's abort marker in the same
    response. noida-db 0.2.3 lists each aborted transaction in every later response too, long
    after its marker, so kafka-python dropped all later records of the (same) transactional
    producer: the reader's position moved on and the records never came. Entries that begin before
    the fetch position are dropped here. With that broker nothing changes (it never serves aborted
    batches); with a broker that does serve them, a transaction aborted across the fetch position
    could reach the reader - harmless here, because the consumer assembles only transactions whose
    marker and every event arrived and drops repeats (an aborted batch is always sent again).
    """
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False,
                      **config)
    kafka_compat.drop_stale_aborted_transactions(c)
    return c


def uncommitted_reader(bootstrap: str, **config):
    """A ``read_uncommitted`` KafkaConsumer (records of open and aborted transactions included)."""
    from kafka import KafkaConsumer
    return KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted", enable_auto_commit=False,
                         **config)


def last_published_resume(bootstrap: str, topic: str, *, tail: int = 500) -> str | None:
    """The `resume` of the last committed marker on a control topic (None: empty or missing)."""
    return control_tail(bootstrap, topic, tail=tail).get("resume")


def control_tail(bootstrap: str, topic: str, *, tail: int = 500) -> dict[str, Any]:
    """The control topic's last committed marker: {resume, commit, offset, end (last stable offset),
    hw (high watermark), exists}; resume None when the topic is empty or missing."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    try:
        c = committed_reader(bootstrap)
    except KafkaError as exc:
        raise ConnectionResetError(f"kafka: {exc}") from None
    out: dict[str, Any] = {"exists": False, "resume": None}
    try:
        if topic not in (c.topics() or set()):
            return out
        out["exists"] = True
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        end = out["end"] = c.end_offsets([tp])[tp]
        if trace_enabled():
            try:
                out["hw"] = end_offsets_uncommitted(bootstrap, [tp]).get(tp)
            except Exception as exc:  # noqa: BLE001 - the trace only
                out["hw"] = repr(exc)
        if not end:
            return out
        c.seek(tp, max(0, end - tail))
        last, empty = None, 0
        while empty < 2 and c.position(tp) < end:
            recs = c.poll(timeout_ms=500)
            empty = 0 if recs else empty + 1
            for m in recs.get(tp, []):
                try:
                    mk = json.loads(m.value)
                except ValueError:
                    continue
                if isinstance(mk, dict) and mk.get("resume"):
                    last = (m.offset, mk)
        if last is not None:
            out.update(offset=last[0], resume=last[1]["resume"], commit=last[1].get("commit"))
        elif c.position(tp) < end:
            # the tail holds committed markers that did not arrive: never guess "empty"
            raise ConnectionResetError(f"kafka: control topic {topic} unreadable up to {end}")
        return out
    except KafkaError as exc:
        raise ConnectionResetError(f"kafka: {exc}") from None
    finally:
        c.close()


def end_offsets_uncommitted(bootstrap: str, parts: list) -> dict:
    """High watermark of each partition (read_uncommitted end offsets)."""
    from kafka import KafkaConsumer
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted", enable_auto_commit=False)
    try:
        return c.end_offsets(parts)
    finally:
        c.close()


def end_offsets(bootstrap: str, parts: list) -> dict:
    """Last stable offset of each partition (what a read_committed reader can reach)."""
    c = committed_reader(bootstrap)
    try:
        return c.end_offsets(parts)
    finally:
        c.close()


# ---------------------------------------------------------------------- consumer side
class TxAssembler:
    """Whole source transactions, in commit order, from per-table topics and the marker topic.

    Pure logic (no Kafka): feed it records, take the transactions that are complete.
    """

    def __init__(self, done_commit: int = 0) -> None:
        self.done = done_commit
        self.buf: dict[int, dict[str, ChangeEvent]] = defaultdict(dict)
        self.pending: dict[Any, deque] = defaultdict(deque)  # partition -> (offset, commit) still buffered
        self.markers: deque = deque()  # (offset, marker dict)

    def add_event(self, tp, offset: int, e: ChangeEvent) -> None:
        if e.commit <= self.done:
            return  # a repeat of a transaction already handed on
        self.buf[e.commit][e.position] = e
        self.pending[tp].append((offset, e.commit))

    def add_marker(self, offset: int, marker: dict) -> None:
        self.markers.append((offset, marker))

    def ready(self) -> Iterator[tuple[int, dict, list[ChangeEvent]]]:
        """(marker offset, marker, events by position) of each next complete transaction."""
        while self.markers:
            off, mk = self.markers[0]
            commit = int(mk["commit"])
            if commit <= self.done:
                self.markers.popleft()
                continue
            got = self.buf.get(commit, {})
            if len(got) < int(mk["events"]):
                return
            self.markers.popleft()
            evs = sorted(self.buf.pop(commit, {}).values(), key=lambda e: e.position)
            self.done = commit
            for q in self.pending.values():
                while q and q[0][1] <= commit:
                    q.popleft()
            # anything left over at or below this commit is a repeat
            for c in [c for c in self.buf if c <= commit]:
                self.buf.pop(c)
            yield off, mk, evs

    def state(self) -> dict[str, Any]:
        """What assembly waits for: the next marker's transaction and how many of its events are here."""
        out: dict[str, Any] = {"done_commit": self.done, "markers_waiting": len(self.markers),
                               "transactions_buffered": len(self.buf)}
        try:  # read from another thread (status): the head may go at any moment
            _off, mk = self.markers[0]
            c = int(mk["commit"])
            out["waiting_for"] = {"commit": c, "events": int(mk["events"]), "have": len(self.buf.get(c, {}))}
        except (IndexError, RuntimeError):
            pass
        return out

    def resume_offsets(self, positions: dict[Any, int]) -> dict[Any, int]:
        """Where to restart each partition: its first still-buffered record, else its read position."""
        out = {}
        for tp, pos in positions.items():
            q = self.pending.get(tp)
            out[tp] = min((o for o, c in q if c > self.done), default=pos) if q else pos
        return out


def _tp_name(tp) -> str:
    return f"{tp.topic}:{tp.partition}"


class KafkaCdcSource:
    """The CdcSource a consumer-group actor reads: Kafka topics, with metadata/snapshot from `inner`."""

    def __init__(self, inner, *, bootstrap: str, topic_prefix: str, source_name: str, pipeline: str,
                 poll_ms: int = 200, partitions: int = 1, recheck_s: float = 10.0) -> None:
        self.inner = inner
        self.bootstrap = bootstrap
        self.prefix = topic_prefix
        self.source_name = source_name
        self.pipeline = pipeline
        self.poll_ms = poll_ms
        self.partitions = partitions
        self.recheck_s = recheck_s
        self.has_slot_state = getattr(inner, "has_slot_state", False)
        self._consumer = None
        self._group: _GroupOffsets | None = None
        self._asm: TxAssembler | None = None

    # metadata and the initial snapshot: from the database
    def prepare(self) -> None:
        self.inner.prepare()

    def tables(self):
        return self.inner.tables()

    def refresh(self):
        return self.inner.refresh()

    def slot_status(self):
        return self.inner.slot_status()

    def snapshot(self, tables, **kw):
        return self.inner.snapshot(tables, **kw)

    def topics(self) -> list[str]:
        return [control_topic(self.prefix, self.source_name)] + \
            [topic_for(self.prefix, self.source_name, s.name) for s in self.inner.tables()]

    def stream(self, resume: str | None = None) -> Iterator:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        self.close()
        token = json.loads(resume) if resume and resume.startswith("{") else {}
        names = self.topics()
        try:
            _ensure_topics(self.bootstrap, names, self.partitions)
            # no group membership on the data path: a group coordinator that is slow, moved or lost
            # must never hold the stream (the positions that count are in the Iceberg table)
            # read_uncommitted: the assembler, not the broker's transaction state, decides what is
            # complete (a source transaction is handed on only when its marker and every one of its
            # events arrived; repeats, including copies from aborted Kafka transactions, are dropped:
            # each is a copy of a transaction the database committed). noida-db 0.2.3 forgets a
            # transactional id's producer when it restarts, so a transaction open at that moment is
            # never aborted and its partitions' last stable offset stays there forever: a
            # read_committed reader then stalls silently while the publisher publishes on.
            c = uncommitted_reader(self.bootstrap, group_id=None, auto_offset_reset="earliest",
                                   max_poll_records=5_000)
            self._consumer = c
            parts = []
            for t in names:
                for p in sorted(c.partitions_for_topic(t) or {0}):
                    parts.append(TopicPartition(t, p))
            c.assign(parts)
            self._group = _GroupOffsets(self.bootstrap, group_id(self.pipeline, self.source_name))
            stored = token.get("offsets", {})
            hints = {} if token else self._group.committed(parts)  # the group's offsets: only a hint
            ctl = control_topic(self.prefix, self.source_name)
            ctl_tp = TopicPartition(ctl, 0)
            # verify the log still holds what the token says: the control record just before the
            # stored offset must be the marker of the token's commit. A broker that lost its log (or
            # a recreated topic) breaks that; then every partition is read from its beginning (the
            # assembler drops what the table already holds), never skipped past.
            verify = None
            if stored.get(_tp_name(ctl_tp)) and token.get("commit"):
                verify = (int(stored[_tp_name(ctl_tp)]) - 1, int(token["commit"]))
            for tp in parts:
                off = stored.get(_tp_name(tp), hints.get(tp))
                if tp == ctl_tp and verify is not None:
                    c.seek(tp, verify[0])
                elif off is not None:
                    c.seek(tp, int(off))
                else:
                    c.seek_to_beginning(tp)
            if trace_enabled():
                ends = c.end_offsets(parts)
                trace("reader.start", source=self.source_name, commit=token.get("commit"),
                      source_resume=token.get("source"), stored=stored,
                      hints={_tp_name(k): v for k, v in hints.items()},
                      ends={_tp_name(k): v for k, v in ends.items()})
        except KafkaError as exc:
            raise ConnectionResetError(f"kafka: {exc}") from None
        asm = self._asm = TxAssembler(int(token.get("commit", 0)))
        counts = {t: sum(1 for tp in parts if tp.topic == t) for t in names}
        next_check = time.monotonic() + self.recheck_s
        conns = kafka_compat.connection_ids(c)
        while True:
            try:
                recs = c.poll(timeout_ms=self.poll_ms)
            except KafkaError as exc:
                raise ConnectionResetError(f"kafka: {exc}") from None
            now_conns = kafka_compat.connection_ids(c)
            if conns and now_conns is not None and conns - now_conns:
                # the broker restarted: it may have lost records this reader already read past, and the
                # publisher resends them at other offsets. Start over from the table's token (verified).
                raise ConnectionResetError("kafka: broker connection changed; re-reading from the committed token")
            conns = now_conns
            if verify is not None and recs.get(ctl_tp):
                first = recs[ctl_tp][0]
                try:
                    ok = first.offset == verify[0] and int(json.loads(first.value)["commit"]) == verify[1]
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    trace("reader.log_rewritten", source=self.source_name, expected_offset=verify[0],
                          expected_commit=verify[1], got_offset=first.offset)
                    log.warning("CDC Kafka reader %s: the control topic no longer holds commit %s at offset %s "
                                "(the broker lost or rewrote its log); reading every partition from its "
                                "beginning", self.source_name, verify[1], verify[0])
                    for tp in parts:
                        c.seek_to_beginning(tp)
                    verify = None
                    asm = self._asm = TxAssembler(asm.done)
                    continue
                verify = None
            if not recs:
                if asm.markers and time.monotonic() >= next_check:
                    # waiting for a transaction's events: were partitions added since we started?
                    next_check = time.monotonic() + self.recheck_s
                    if partition_counts(self.bootstrap, names) != counts:
                        raise ConnectionResetError("kafka: topic partitions changed; reassigning")
                yield None
                continue
            for tp, msgs in recs.items():
                for m in msgs:
                    try:
                        if tp.topic == ctl:
                            asm.add_marker(m.offset, json.loads(m.value))
                        else:
                            asm.add_event(tp, m.offset, decode_event(m.value))
                    except (ValueError, KeyError, TypeError) as exc:
                        yield BadEvent(f"undecodable kafka message: {exc}", repr(m.value)[:2000],
                                       f"{m.offset:024X}", tp.topic)
            for off, mk, evs in asm.ready():
                yield from evs
                for b in mk.get("bad") or []:
                    yield BadEvent(b["reason"], b["raw"], b["position"], b.get("table"))
                positions = {tp: c.position(tp) for tp in parts if tp.topic != ctl}
                offsets = {_tp_name(tp): o for tp, o in asm.resume_offsets(positions).items()}
                offsets[f"{ctl}:0"] = off + 1
                ct = mk.get("commit_time")
                token_out = {"commit": int(mk["commit"]), "offsets": offsets}
                if mk.get("resume") and not str(mk["resume"]).startswith("{"):
                    token_out["source"] = mk["resume"]  # the source's own resume (a MariaDB GTID)
                yield TxEnd(commit=int(mk["commit"]), resume=json.dumps(token_out, sort_keys=True),
                            tx_id=mk.get("tx_id") or "", commit_time=dt.datetime.fromisoformat(ct) if ct else None,
                            events=len(evs))

    def ack(self, resume: str) -> None:
        """The data up to `resume` is in Iceberg: commit the offsets to the group (a hint for tools),
        in the background."""
        if self._group is None or not resume.startswith("{"):
            return
        from kafka import TopicPartition
        offs = {}
        for name, off in json.loads(resume)["offsets"].items():
            topic, part = name.rsplit(":", 1)
            offs[TopicPartition(topic, int(part))] = int(off)
        self._group.submit(offs)

    def lag(self) -> dict[str, Any]:
        """Per partition: the reader's fetch position, the log end (`end`, what it reads up to) and the
        last stable offset (`stable`: below `end` while a Kafka transaction is open, and for good
        if the broker lost a transaction's state); `behind` sums position-to-end."""
        out: dict[str, Any] = {"transport": "kafka", "group": group_id(self.pipeline, self.source_name)}
        c = self._consumer
        if c is None:
            return out
        try:
            sub = c._subscription  # kafka-python's synchronized assignment state: safe from another thread
            pos = {tp: sub.position(tp) for tp in list(sub.assignment)}
        except Exception:  # noqa: BLE001 - an internal of kafka-python: no positions, no lag
            return out
        pos = {tp: p.offset for tp, p in pos.items() if p is not None}
        ends = end_offsets_uncommitted(self.bootstrap, list(pos))
        stable = end_offsets(self.bootstrap, list(pos))
        out["partitions"] = {_tp_name(tp): {"position": pos[tp], "end": ends.get(tp), "stable": stable.get(tp)}
                             for tp in sorted(pos)}
        out["behind"] = sum(max(0, ends[tp] - pos[tp]) for tp in pos if tp in ends)
        if self._asm is not None:
            out["assembly"] = self._asm.state()
        return out

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
        self._consumer = None
        if self._group is not None:
            self._group.close()
        self._group = None
        try:
            self.inner.close()
        except Exception:  # noqa: BLE001
            pass


class _GroupOffsets:
    """The consumer group's committed offsets, kept off the data path.

    They are a hint (for ``kafka-consumer-groups`` lag and for a first start with no table yet),
    committed by a background thread with its own client: latest offsets win, failures are only
    logged, and a coordinator that never answers costs nothing but a stale hint.
    """

    def __init__(self, bootstrap: str, group: str, *, timeout_ms: int = 5_000) -> None:
        self.bootstrap, self.group, self.timeout_ms = bootstrap, group, timeout_ms
        self._client = None
        self._latest: dict | None = None
        self._cv = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def _open(self):
        if self._client is None:
            from kafka import KafkaConsumer
            self._client = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                         enable_auto_commit=False)
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close(autocommit=False, timeout_ms=1_000)
            except Exception:  # noqa: BLE001 - a broken client
                pass
        self._client = None

    def committed(self, parts) -> dict:
        """{partition: offset} the group committed (empty when unknown or unreachable)."""
        out = {}
        try:
            c = self._open()
            for tp in parts:
                off = c.committed(tp, timeout_ms=self.timeout_ms)
                if off is not None:
                    out[tp] = off
        except Exception as exc:  # noqa: BLE001 - a hint only
            log.debug("kafka group offsets unavailable: %s", exc)
            self._drop()
        return out

    def submit(self, offsets: dict) -> None:
        """Commit these {partition: offset} soon (a newer call replaces one not sent yet)."""
        with self._cv:
            self._latest = offsets
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="eai-cdc-group-offsets", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        from kafka.structs import OffsetAndMetadata
        while True:
            with self._cv:
                while self._latest is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    break
                offsets, self._latest = self._latest, None
                assert offsets is not None  # woken with offsets to commit (the loop above)
            try:
                self._open().commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                                    timeout_ms=self.timeout_ms)
            except Exception as exc:  # noqa: BLE001 - a hint only; the table holds the truth
                log.debug("kafka offset commit failed: %s", exc)
                self._drop()
        self._drop()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(3)
        else:
            self._drop()
