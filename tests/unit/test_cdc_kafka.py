"""Kafka transport logic without a broker: serialisation, transaction reassembly, publisher acks."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, Heartbeat, TableSpec, TxEnd, position
from eai_ray.ingestion.cdc.kafka import (KafkaPublisher, TxAssembler, decode_event, encode_event, encode_key,
                                         topic_for)


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
    try:
        pub2._pump(threading.Event())
    except ConnectionResetError:
        pass
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
