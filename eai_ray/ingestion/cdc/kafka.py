"""Kafka transport for CDC: a publisher (source -> per-table topics) and a Kafka-backed CdcSource.

Publisher (``KafkaPublisher``): reads the log-based source and writes every change event, as JSON
with its position, to ``<prefix>.<source>.<table>`` keyed by the primary key, plus one marker per
source transaction to ``<prefix>.<source>._tx`` (commit, event count, resume token, bad events).
A batch of source transactions is one Kafka transaction (``transactional_id`` stable per source:
a restarted publisher fences the old one); the source (slot/GTID) is acknowledged only after
the Kafka transaction commits. A crash in between resends the transaction: harmless, below.

Consumer side (``KafkaCdcSource``): a CdcSource the ordinary ``CdcConsumer`` drives. It reads the
topics with ``isolation_level=read_committed`` and no auto commit, reassembles whole source
transactions in commit order from the markers (a marker becomes visible in the same Kafka
transaction as its events), drops repeats, and hands a ``TxEnd`` whose ``resume`` token holds
the Kafka offsets to restart from. The sink commits that token in the SAME Iceberg snapshot
summary as the data, and on restart ``stream(resume)`` seeks to it; the group's committed
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
from typing import Any, Callable, Iterator

from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, Heartbeat, TxEnd

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
    """Database log -> Kafka topics, transactionally; acks the source after the Kafka commit."""

    def __init__(self, source, *, bootstrap: str, topic_prefix: str, source_name: str, pipeline: str,
                 batch_events: int = 2_000, batch_seconds: float = 0.05, partitions: int = 1,
                 producer_factory: Callable[..., Any] | None = None,
                 committed_resume: Callable[[], str | None] | None = None,
                 durable_commit: Callable[[], int | None] | None = None) -> None:
        self.source = source
        # a source with a slot (PostgreSQL) is acknowledged only up to the commit the consumer
        # holds in Iceberg, not up to what the broker said it committed: a broker that loses an
        # acknowledged transaction (seen with noida-db restarting under load) costs a resend, not data
        self.durable_commit = durable_commit
        self._durable: tuple[float, int | None] = (0.0, None)
        self._published_commit = 0
        # a source without server-side state (MariaDB/MySQL: no slot) starts from the last source
        # transaction it committed to Kafka, else from where the consumer's snapshot ended
        self.committed_resume = committed_resume
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
        self._producer = None

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
        p.init_transactions()  # fences a previous publisher with the same id
        return p

    def run(self, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                self.source.prepare()
                if getattr(self.source, "has_slot_state", False):
                    if self.source.slot_status() in (None, "lost"):
                        stop.wait(0.5)  # the consumer's snapshot creates the slot
                        continue
                    start = None  # the slot remembers what was acknowledged
                else:
                    start = self.start_position()
                    if start is None:
                        stop.wait(0.5)  # nothing published yet and no snapshot committed yet
                        continue
                self._producer = self._open()
                attempt = 0
                self._pump(stop, start)
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, the source resends unacked
                attempt += 1
                self.restarts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("CDC publisher %s: %s; reconnecting", self.source_name, self.last_error)
                stop.wait(min(3.0, 0.2 * 2 ** min(attempt, 4)))
            finally:
                self._close()

    def _close(self) -> None:
        for closer in (lambda: self.source.close(), lambda: self._producer and self._producer.close(timeout=2)):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._producer = None

    def start_position(self) -> str | None:
        """Resume token after the last source transaction committed to the control topic, or the
        consumer's committed snapshot position when the topic holds none."""
        last = last_published_resume(self.bootstrap, control_topic(self.prefix, self.source_name))
        if last is not None:
            return last
        return self.committed_resume() if self.committed_resume else None

    def _pump(self, stop: threading.Event, start: str | None = None) -> None:
        txs: list[tuple[TxEnd, list[ChangeEvent], list[BadEvent]]] = []
        open_events: list[ChangeEvent] = []
        bad: list[BadEvent] = []
        started: float | None = None
        n = 0
        for item in self.source.stream(start):
            if stop.is_set():
                break
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
                if self.durable_commit is None or (self._durable_now() or 0) >= self._published_commit:
                    self.source.ack(item.resume)  # idle, and all that was published is durable
            if txs and (n >= self.batch_events or time.monotonic() - started >= self.batch_seconds):
                self.publish(txs)
                txs, n, started = [], 0, None
        if txs:
            self.publish(txs)

    def publish(self, txs: list[tuple[TxEnd, list[ChangeEvent], list[BadEvent]]]) -> None:
        """One Kafka transaction for these source transactions; then acknowledge the source."""
        p = self._producer
        p.begin_transaction()
        try:
            conns = _conn_ids(p)
            ctl = control_topic(self.prefix, self.source_name)
            for tx, events, bad in txs:
                for e in events:
                    p.send(topic_for(self.prefix, self.source_name, e.table), key=encode_key(e.key),
                           value=encode_event(e))
                p.send(ctl, key=str(tx.commit).encode(), value=encode_marker(tx, len(events), bad))
            p.flush(timeout=self.end_timeout_s)
            if _conn_ids(p) != conns:
                # the broker restarted under the open transaction: abort it; the source resends
                raise ConnectionResetError("kafka: broker connection changed during the transaction")
            _end_transaction(p, commit=True, timeout_s=self.end_timeout_s)
            if _conn_ids(p) != conns:
                # the broker restarted while the commit was in flight: whether the transaction
                # survived is unknown, so the source is not acknowledged and resends it (a repeat
                # is dropped by the consumer; a loss would not be noticed by anyone)
                raise ConnectionResetError("kafka: broker connection changed during the commit")
        except Exception:
            try:
                _end_transaction(p, commit=False, timeout_s=5.0)
            except Exception:  # noqa: BLE001 - the broker may be gone; the producer is reopened
                pass
            raise
        self.published_tx += len(txs)
        self.published_events += sum(len(e) for _, e, _ in txs)
        self._published_commit = txs[-1][0].commit
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
            value = self.durable_commit()
            self._durable = (time.monotonic(), value)
        return value


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
    base = getattr(getattr(c, "_fetcher", None), "PartitionRecords", None)
    if base is not None:
        def records(fetch_offset, tp, recs, **kw):
            aborted = kw.get("aborted_transactions")
            if aborted:
                kw["aborted_transactions"] = [t for t in aborted if t.first_offset >= fetch_offset]
            return base(fetch_offset, tp, recs, **kw)
        c._fetcher.PartitionRecords = records  # an instance attribute: this consumer only
    return c


def last_published_resume(bootstrap: str, topic: str, *, tail: int = 500) -> str | None:
    """The `resume` of the last committed marker on a control topic (None: empty or missing)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    try:
        c = committed_reader(bootstrap)
    except KafkaError as exc:
        raise ConnectionResetError(f"kafka: {exc}") from None
    try:
        if topic not in (c.topics() or set()):
            return None
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        if not end:
            return None
        c.seek(tp, max(0, end - tail))
        last, empty = None, 0
        while empty < 2 and c.position(tp) < end:
            recs = c.poll(timeout_ms=500)
            empty = 0 if recs else empty + 1
            for m in recs.get(tp, []):
                try:
                    last = json.loads(m.value).get("resume") or last
                except (ValueError, AttributeError):
                    continue
        return last
    except KafkaError as exc:
        raise ConnectionResetError(f"kafka: {exc}") from None
    finally:
        c.close()


def end_offsets(bootstrap: str, parts: list) -> dict:
    """Last stable offset of each partition (what a read_committed reader can reach)."""
    c = committed_reader(bootstrap)
    try:
        return c.end_offsets(parts)
    finally:
        c.close()


def _end_transaction(producer, *, commit: bool, timeout_s: float) -> None:
    """commit_transaction()/abort_transaction() with a deadline: kafka-python waits for the broker's
    answer without one, and an EndTxn in flight while the broker restarts is never answered."""
    from kafka.errors import KafkaTimeoutError
    tm, sender = getattr(producer, "_transaction_manager", None), getattr(producer, "_sender", None)
    if tm is None or sender is None:  # another client: its own calls
        return producer.commit_transaction() if commit else producer.abort_transaction()
    result = tm.begin_commit() if commit else tm.begin_abort()
    sender.wakeup()
    if not result.wait(timeout_ms=int(timeout_s * 1000)):
        raise KafkaTimeoutError(f"kafka: no answer to the transaction's {'commit' if commit else 'abort'} "
                                f"within {timeout_s:.0f} s")


def _conn_ids(producer) -> frozenset | None:
    """Identities of the producer's broker connections (a reconnect makes new ones); None if unknown."""
    try:
        return frozenset((k, id(v)) for k, v in producer._sender._client._manager._conns.items())
    except AttributeError:
        return None


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
            c = committed_reader(self.bootstrap, group_id=None, auto_offset_reset="earliest", max_poll_records=5_000)
            self._consumer = c
            parts = []
            for t in names:
                for p in sorted(c.partitions_for_topic(t) or {0}):
                    parts.append(TopicPartition(t, p))
            c.assign(parts)
            self._group = _GroupOffsets(self.bootstrap, group_id(self.pipeline, self.source_name))
            stored = token.get("offsets", {})
            hints = {} if token else self._group.committed(parts)  # the group's offsets: only a hint
            for tp in parts:
                off = stored.get(_tp_name(tp), hints.get(tp))
                if off is not None:
                    c.seek(tp, int(off))
                else:
                    c.seek_to_beginning(tp)
        except KafkaError as exc:
            raise ConnectionResetError(f"kafka: {exc}") from None
        ctl = control_topic(self.prefix, self.source_name)
        asm = self._asm = TxAssembler(int(token.get("commit", 0)))
        counts = {t: sum(1 for tp in parts if tp.topic == t) for t in names}
        next_check = time.monotonic() + self.recheck_s
        while True:
            try:
                recs = c.poll(timeout_ms=self.poll_ms)
            except KafkaError as exc:
                raise ConnectionResetError(f"kafka: {exc}") from None
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
                yield TxEnd(commit=int(mk["commit"]), resume=json.dumps({"commit": int(mk["commit"]),
                                                                          "offsets": offsets}, sort_keys=True),
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
        """Per partition: the reader's fetch position and the last stable offset; `behind` sums the gap."""
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
        ends = end_offsets(self.bootstrap, list(pos))
        out["partitions"] = {_tp_name(tp): {"position": pos[tp], "end": ends.get(tp)} for tp in sorted(pos)}
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
