"""Kafka transport logic without a broker: serialisation, transaction reassembly, publisher acks."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, Heartbeat, TableSpec, TxEnd, position
from eai_ray.ingestion.cdc.kafka import KafkaPublisher, TxAssembler, decode_event, encode_event, encode_key, topic_for


def _ev(commit, i, table="items", key=1, op="c"):
    return ChangeEvent(table=table, op=op, position=position(commit, i), commit=commit, tx_id=str(commit),
                       commit_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), key={"id": key},
                       after={"id": key, "name": "x"}, unchanged=("big",))


def test_event_roundtrip_and_key():
    e = _ev(0x10, 2)
    back = decode_event(encode_event(e))
    assert back == e
    assert encode_key({"b": 2, "a": 1}) == b'{"a":1,"b":2}'
    assert topic_for("eai.cdc", "pg", "items") == "eai.cdc.pg.items"


def test_assembler_orders_transactions_across_topics_and_drops_repeats():
    asm = TxAssembler()
    # tx 20 (table b) arrives before tx 10 (table a); markers decide the order
    asm.add_event("b", 0, _ev(20, 0, "b"))
    asm.add_marker(0, {"commit": 10, "events": 2})
    asm.add_marker(1, {"commit": 20, "events": 1})
    assert list(asm.ready()) == []  # tx 10 incomplete: nothing, not even tx 20
    asm.add_event("a", 0, _ev(10, 0, "a"))
    asm.add_event("a", 1, _ev(10, 1, "a"))
    asm.add_event("a", 2, _ev(10, 1, "a"))  # a resent copy: same position
    got = [(mk["commit"], [e.position for e in evs]) for _off, mk, evs in asm.ready()]
    assert got == [(10, [position(10, 0), position(10, 1)]), (20, [position(20, 0)])]
    # a publisher that resent tx 20 after a crash: its events and marker are dropped
    asm.add_event("b", 1, _ev(20, 0, "b"))
    asm.add_marker(2, {"commit": 20, "events": 1})
    assert list(asm.ready()) == []
    # restart offsets: the first record of a transaction not handed on yet
    asm.add_event("a", 3, _ev(30, 0, "a"))
    assert asm.resume_offsets({"a": 4, "b": 2}) == {"a": 3, "b": 2}


class _FakeSource:
    def __init__(self, items):
        self.items, self.acked = items, []

    def prepare(self):
        pass

    def tables(self):
        return [TableSpec("items", "public.items", ["id"])]

    def stream(self, resume):
        yield from self.items

    def ack(self, resume):
        self.acked.append(resume)

    def close(self):
        pass


class _FakeProducer:
    def __init__(self, fail_commit=False):
        self.log, self.fail_commit = [], fail_commit

    def begin_transaction(self):
        self.log.append("begin")

    def send(self, topic, key=None, value=None):
        self.log.append(("send", topic))

    def flush(self, timeout=None):
        pass

    def commit_transaction(self):
        if self.fail_commit:
            raise ConnectionResetError("broker gone")
        self.log.append("commit")

    def abort_transaction(self):
        self.log.append("abort")

    def close(self, timeout=None):
        pass


def test_publisher_acks_the_source_only_after_the_kafka_commit():
    items = [_ev(10, 0), TxEnd(10, "A"), BadEvent("bad", "raw", position(11, 0)), _ev(11, 1), TxEnd(11, "B")]
    src = _FakeSource(items)
    prod = _FakeProducer()
    pub = KafkaPublisher(src, bootstrap="x", topic_prefix="p", source_name="pg", pipeline="t",
                         batch_events=100, batch_seconds=60, producer_factory=lambda: prod)
    pub._producer = prod
    pub._pump(threading.Event())
    assert prod.log == ["begin", ("send", "p.pg.items"), ("send", "p.pg._tx"), ("send", "p.pg.items"),
                        ("send", "p.pg._tx"), "commit"]
    assert src.acked == ["B"] and pub.published_events == 2

    src2, bad = _FakeSource(items), _FakeProducer(fail_commit=True)
    pub2 = KafkaPublisher(src2, bootstrap="x", topic_prefix="p", source_name="pg", pipeline="t",
                          producer_factory=lambda: bad)
    pub2._producer = bad
    with pytest.raises(ConnectionResetError):  # the failed commit reaches the caller (it restarts the pump)
        pub2._pump(threading.Event())
    assert src2.acked == [] and "abort" in bad.log  # nothing acknowledged: the source resends


def test_publisher_refuses_a_marker_over_another_transactions_events():
    # a source that hands on the first rows of transaction 12, then (after a reconnect that
    # replays) ends transaction 11: its marker would count 12's rows and the consumer would wait
    # forever for them under 11. The publisher restarts instead, publishing and acking nothing.
    items = [_ev(12, 0), _ev(11, 1), TxEnd(11, "B")]
    src, prod = _FakeSource(items), _FakeProducer()
    pub = KafkaPublisher(src, bootstrap="x", topic_prefix="p", source_name="pg", pipeline="t",
                         producer_factory=lambda: prod)
    pub._producer = prod
    with pytest.raises(ConnectionResetError, match="another transaction"):
        pub._pump(threading.Event())
    assert prod.log == [] and src.acked == []


def test_publisher_with_a_slot_acks_only_what_the_consumer_holds():
    # PostgreSQL: the slot advances to the commit the consumer has in Iceberg (here 0x10), not to
    # what the broker acknowledged (0x11); an idle heartbeat is acked only once that caught up
    items = [_ev(0x10, 0), TxEnd(0x10, "A"), _ev(0x11, 1), TxEnd(0x11, "B")]
    src, prod = _FakeSource(items + [Heartbeat("C")]), _FakeProducer()
    durable = [0x10]
    pub = KafkaPublisher(src, bootstrap="x", topic_prefix="p", source_name="pg", pipeline="t",
                         batch_events=100, batch_seconds=60, producer_factory=lambda: prod,
                         durable_commit=lambda: durable[0])
    pub._producer = prod
    pub._pump(threading.Event())
    assert src.acked == ["10"]  # not "B", and not the heartbeat: 0x11 is not durable yet
    durable[0] = 0x11
    pub._durable = (0.0, None)
    src2 = _FakeSource([Heartbeat("C")])
    pub.source = src2
    pub._pump(threading.Event())
    assert src2.acked == ["C"]


# ---------------------------------------------------------------------- stall detection (fake clock)
class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_stall_detector_needs_the_source_ahead_for_the_whole_threshold():
    from eai_ray.ingestion.cdc.stall import StallDetector

    clock = _Clock()
    det = StallDetector(60, clock=clock)
    det.restarted(covered=40)
    clock.t += 600
    assert det.check(40) is None  # quiet source, however long: not a stall
    assert det.check(45) is None  # the source just wrote: the clock starts now, not 600 s ago
    clock.t += 59
    assert det.check(47) is None
    det.published(47)  # progress clears it
    clock.t += 59
    assert det.check(50) is None
    clock.t += 61
    ev = det.check(52, source_head="0-1-52")
    assert ev and ev["published_position"] == 47 and ev["source_position"] == 52 and ev["behind"] == 5
    assert ev["source_head"] == "0-1-52" and ev["stalled_for_s"] >= 60 and det.stalls == 1
    assert det.evidence is ev
    assert det.check(52) is None  # reported once; the next verdict after another full threshold
    clock.t += 60
    assert det.check(53)["stalls"] == 2
    det.published(53)
    assert det.evidence is None


def test_stall_detector_without_a_known_position_uses_the_first_head_seen():
    from eai_ray.ingestion.cdc.stall import StallDetector

    clock = _Clock()
    det = StallDetector(10, clock=clock)
    det.restarted(None)  # e.g. waiting for a resume point, nothing published yet
    assert det.check(100) is None  # baseline
    clock.t += 30
    assert det.check(100) is None  # nothing new at the source
    assert det.check(101) is None
    clock.t += 10
    assert det.check(102)["behind"] == 2


def test_stall_detector_heartbeats_count_only_when_they_move():
    from eai_ray.ingestion.cdc.stall import StallDetector

    clock = _Clock()
    det = StallDetector(10, clock=clock)
    det.published(0x100)
    assert det.check(0x180) is None
    clock.t += 5
    det.heartbeat(0x100)  # an idle reader that did not move: no progress
    clock.t += 6
    assert det.check(0x180) is not None
    det.heartbeat(0x180)  # it caught up
    assert det.evidence is None and det.check(0x180) is None


class _HeadSource(_FakeSource):
    """A source whose stream blocks (a reader stuck on its socket) until closed."""

    def __init__(self):
        super().__init__([])
        self.closed = threading.Event()

    def stream(self, resume):
        self.resumed_from = resume
        while not self.closed.wait(0.01):
            yield None
        raise ConnectionResetError("socket closed")

    def close(self):
        self.closed.set()


def test_publisher_watchdog_reports_a_stall_and_restarts_the_reader():
    clock = _Clock()
    src = _HeadSource()
    head = [(50, "0-1-50")]
    pub = KafkaPublisher(src, bootstrap="x", topic_prefix="p", source_name="my", pipeline="t",
                         producer_factory=_FakeProducer, source_head=lambda: head[0], stall_seconds=60,
                         clock=clock)
    pub.stall.restarted(covered=40)
    pub.state = "publishing"
    assert pub.check_stall() is None  # the source is ahead: the clock starts
    clock.t += 61
    ev = pub.check_stall()
    assert ev and ev["source_head"] == "0-1-50" and ev["published_position"] == 40
    st = pub.status()
    assert st["state"] == "stalled" and st["stall"]["behind"] == 10 and st["stalls"] == 1
    assert pub._restart.is_set() and src.closed.is_set()  # the blocked reader is woken to restart
    with pytest.raises(ConnectionResetError):
        pub._pump(threading.Event(), "0-1-40")
    # after the restart it publishes again: the stall clears
    pub.stall.published(50)
    pub.check_stall()
    assert pub.status()["state"] != "stalled" and pub.status()["stall"]["stalls"] == 1


def test_publisher_resumes_from_the_consumer_when_the_control_topic_is_empty(monkeypatch):
    # the broker lost its log (or the topic was recreated): the control topic holds no marker. The
    # publisher must start from the GTID the consumer holds in Iceberg (carried in its Kafka token),
    # not wait forever for a marker that will never come.
    from eai_ray.ingestion.cdc import kafka as k

    tails = {"resume": None, "end": 0, "exists": True}
    monkeypatch.setattr(k, "control_tail", lambda *a, **kw: dict(tails))
    pub = KafkaPublisher(_FakeSource([]), bootstrap="x", topic_prefix="p", source_name="my", pipeline="t",
                         committed_resume=lambda: "0-1-77")
    assert pub.start_position() == "0-1-77" and pub.resume_from["from"].startswith("consumer (Iceberg)")
    # a control topic behind the consumer (it lost a tail): the consumer's position wins
    tails.update(resume="0-1-60", end=40)
    assert pub.start_position() == "0-1-77"
    # ahead of the consumer: the control topic's marker (nothing resent) ...
    tails.update(resume="0-1-90")
    assert pub.start_position() == "0-1-90" and pub.resume_from["from"] == "control topic"
    # ... unless this publisher restarts after a Kafka failure: the broker may have lost part of it
    pub._broker_suspect = True
    assert pub.start_position() == "0-1-77" and "Kafka failure" in pub.resume_from["from"]


def test_consumer_token_carries_the_source_resume_for_the_publisher(monkeypatch):
    from eai_ray.config import parse_pipeline
    from eai_ray.orchestration import cdc as orch

    cfg = parse_pipeline({"name": "t", "state_dir": "/tmp/unused-eai-state", "sources": [{
        "kind": "mariadb", "name": "my", "port": 1, "database": "d", "tables": [{"name": "items"}],
        "cdc": {"transport": "kafka", "kafka_bootstrap": "127.0.0.1:1", "stall_seconds": 7}}]})

    class _Sink:
        def __init__(self, resume):
            self.resume = resume

        def prepare(self, specs):
            pass

        def resume_point(self, fresh=False):
            return (position(0x4D, 0), self.resume)

    class _Reader:
        has_slot_state = False

        def tables(self):
            return []

        def lag(self):
            return {"gtid_binlog_pos": "0-1-80", "server_seq": 80}

    token = '{"commit": 77, "offsets": {"p.my._tx:0": 9}, "source": "0-1-77"}'
    sinks = iter([_Sink(token), _Sink('{"commit": 77, "offsets": {}}'), _Sink("0-1-5")])
    monkeypatch.setattr(orch, "build_sink", lambda *a, **kw: next(sinks))
    monkeypatch.setattr(orch, "build_source", lambda *a, **kw: _Reader())
    pubs = [orch.build_publisher(cfg, "my") for _ in range(3)]
    assert pubs[0].committed_resume() == "0-1-77"
    assert pubs[1].committed_resume() is None  # an old token without the source resume: unknown
    assert pubs[2].committed_resume() == "0-1-5"  # the snapshot's GTID
    assert pubs[0].source_head() == (80, "0-1-80") and pubs[0].stall.stall_seconds == 7


def test_stall_detector_a_restart_loop_is_a_stall_a_legitimate_wait_is_not():
    from eai_ray.ingestion.cdc.stall import StallDetector

    clock = _Clock()
    det = StallDetector(60, clock=clock)
    det.published(10)
    assert det.check(20) is None
    for _ in range(7):  # restarts every 10 s, never publishing: the clock runs on
        clock.t += 10
        det.restarted(10)
    assert det.check(20)["stalled_for_s"] >= 60
    det2 = StallDetector(60, clock=clock)
    for _ in range(20):  # the consumer's initial snapshot takes long while the source writes on
        det2.waiting()
        assert det2.check(100 + int(clock.t)) is None
        clock.t += 10


def test_cdc_status_prints_a_stalled_publisher_with_its_evidence(capsys):
    import argparse

    from eai_ray.cli.cdc import print_status

    row = {"source": "my", "state": "streaming", "position": "x", "lag": {"behind": 0}, "events": 0,
           "publisher": {"state": "stalled", "published_tx": 48, "published_position": 52, "restarts": 1,
                         "stalls": 1, "last_published_at": "2026-01-01T00:00:00+00:00",
                         "stall": {"stalled_for_s": 61.2, "threshold_s": 60.0, "source_head": "0-1-143",
                                   "behind": 91, "published_position": 52}}}
    print_status(argparse.Namespace(json=False), [row])
    out = capsys.readouterr().out
    assert "publisher: stalled" in out and "stalls=1" in out
    assert "STALLED: nothing published for 61.2 s" in out and "0-1-143" in out and "91 beyond" in out
