"""Kafka transport, end to end against a real Kafka-protocol broker (noida-db, `private_kafka`).

PostgreSQL or MariaDB -> publisher process (transactional producer, per-table topics) -> broker -> consumer
process (read_committed, offsets committed in the Iceberg snapshot summary) -> bronze/silver.
While a randomized workload runs, the test SIGKILLs the consumer process twice and the publisher
once (each is started again), and restarts the broker (same port and data dir) twice: while
changes flow (EAI_CDC_KAFKA_RESTART_UNDER_LOAD=1) and between two workload phases, while publisher
and consumer stay connected.
Afterwards silver equals the source row for row and bronze holds every change exactly once.
PostgreSQL goes through 3 partitions per table topic, MariaDB through 1.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.ingestion.cdc.kafka import partition_counts
from eai_ray.storage.catalog import open_catalog
from tests.integration.cdc_workload import Workload, bronze_counts, my_schema, pg_schema, silver_rows, source_rows, wait_until

pytestmark = pytest.mark.integration

# also restart the broker while changes flow (the kill test does, at random). Opt-in here: MariaDB
# stalled in 1 of 6 runs after a restart landed on a commit in flight (suspected: noida-db losing
# that transaction's state, which holds the last stable offset); PostgreSQL passed every run.
UNDER_LOAD = os.environ.get("EAI_CDC_KAFKA_RESTART_UNDER_LOAD") == "1"

WORKLOAD_SECONDS = float(os.environ.get("EAI_CDC_KAFKA_SECONDS", "24"))


def _run_consumer(raw: dict) -> None:  # child process: one consumer-group member
    from eai_ray.orchestration.cdc import build_consumer
    cfg = parse_pipeline(raw)
    build_consumer(cfg, cfg.sources[0].name).run(threading.Event())


def _run_publisher(raw: dict) -> None:  # child process: the publisher
    from eai_ray.orchestration.cdc import build_publisher
    cfg = parse_pipeline(raw)
    build_publisher(cfg, cfg.sources[0].name).run(threading.Event())


class Proc:
    """A child process this test started; stopped only by its own PID."""

    def __init__(self, target, raw):
        self.target, self.raw, self.p = target, raw, None

    def start(self):
        self.p = mp.get_context("spawn").Process(target=self.target, args=(self.raw,), daemon=True)
        self.p.start()

    def kill(self):
        if self.p is not None and self.p.is_alive():
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.join(10)


def _source(engine: str, request, db_name: str):
    """(connect, source block) for a fresh database on the engine's private server."""
    if engine == "postgres":
        import psycopg2
        pg = request.getfixturevalue("private_postgres")
        db = pg.create_database(db_name)
        connect = lambda: psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=db)  # noqa: E731
        schema, src = pg_schema, {"kind": "postgres", "name": "pg", "port": pg.port, "user": "postgres",
                                  "database": db}
    else:
        import pymysql
        my = request.getfixturevalue("private_mariadb")
        db = my.create_database(db_name)
        connect = lambda: pymysql.connect(host="127.0.0.1", port=my.port, user="root", database=db,  # noqa: E731
                                          charset="utf8mb4")
        schema, src = my_schema, {"kind": "mariadb", "name": "my", "port": my.port, "user": "root", "database": db}
    c = connect()
    c.cursor().execute(schema("items"))
    c.commit()
    c.close()
    return connect, src


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
def test_cdc_through_kafka_exactly_once(engine, request, private_kafka, tmp_path):
    broker = private_kafka
    connect, src = _source(engine, request, f"cdc_kafka_{engine[:2]}")
    work = Workload(connect, "items", seed=7, ids=300)
    work.seed_rows(150)
    raw = {"name": f"kafka{engine[:2]}", "state_dir": str(tmp_path / "state"),
           "sources": [{**src, "tables": [{"name": "items"}],
                        "cdc": {"transport": "kafka", "kafka_bootstrap": broker.bootstrap,
                                "topic_prefix": f"eai.test.{engine}", "flush_seconds": 0.3,
                                "kafka_partitions": 3 if engine == "postgres" else 1}}]}
    cfg = parse_pipeline(raw)
    catalog = open_catalog(cfg)
    consumer, publisher = Proc(_run_consumer, raw), Proc(_run_publisher, raw)
    consumer.start()  # snapshots the table and creates the slot the publisher waits for
    publisher.start()
    events = []
    try:
        assert wait_until(lambda: _exists(catalog, f"silver.{src['name']}_items"), timeout=60), "no snapshot"
        half = WORKLOAD_SECONDS / 2
        first = [(0.5, "kill consumer")] + ([(0.8, "restart broker")] if UNDER_LOAD else [])
        for phase, plan in enumerate([first, [(0.3, "kill publisher"), (0.7, "kill consumer")]]):
            if phase == 1:
                # the broker restarts between writes (see the module docstring): publisher and
                # consumer are connected and must carry on from where they were
                time.sleep(1.5)
                broker.restart()
                events.append("restart broker")
            writer = threading.Thread(target=work.run, args=(half, 150.0))
            writer.start()
            t0 = time.time()
            for frac, what in plan:
                time.sleep(max(0.0, t0 + frac * half - time.time()))
                if what == "restart broker":
                    broker.restart()
                    events.append("restart broker under load")
                    continue
                proc = consumer if what == "kill consumer" else publisher
                proc.kill()  # SIGKILL, in the middle of the workload
                proc.start()
                events.append(what)
            writer.join()
        expected = source_rows(connect, "items")

        def caught_up():
            ops, _rows, _distinct = bronze_counts(catalog, f"bronze.{src['name']}_items")
            streamed = sum(v for k, v in ops.items() if k != "r")
            return streamed >= work.total and silver_rows(catalog, f"silver.{src['name']}_items") == expected

        # a loaded CI machine restarts killed processes slowly: wait long, then tell "behind" from "lost"
        ok = wait_until(caught_up, timeout=240, interval=1.0)
        hint = _group_hint(broker.bootstrap, cfg.name, src["name"], f"eai.test.{engine}")
    finally:
        consumer.kill()
        publisher.kill()
    ops, rows, distinct = bronze_counts(catalog, f"bronze.{src['name']}_items", streamed_only=True)
    print(f"\nkafka: events={events} bronze={dict(ops)} streamed={rows} distinct={distinct} "
          f"workload changes={dict(work.counts)} (total {work.total}) tx={work.transactions} "
          f"broker restarts={broker.restarts}")
    if os.environ.get("EAI_DIAG"):
        print((broker.dir / "kafka.log").read_text(errors="replace")[-3000:])
        _diagnose(broker, catalog, f"eai.test.{engine}", src["name"])
    want_parts = 3 if engine == "postgres" else 1
    assert partition_counts(broker.bootstrap, [f"eai.test.{engine}.{src['name']}.items"]) == \
        {f"eai.test.{engine}.{src['name']}.items": want_parts}
    print(f"consumer group offsets (a hint for tools): {hint}")
    assert len(hint) == want_parts + 1, "the consumer group's offsets were not committed"
    assert rows == distinct, "bronze holds a change twice"
    assert ok or rows >= work.total, (f"the consumer did not catch up within 240 s: bronze {dict(ops)}, "
                                      f"workload {dict(work.counts)}")
    assert ops.get("c", 0) == work.counts["c"], "inserts lost or doubled"
    assert ops.get("u", 0) == work.counts["u"], "updates lost or doubled"
    assert ops.get("d", 0) == work.counts["d"], "deletes lost or doubled"
    assert ok and silver_rows(catalog, f"silver.{src['name']}_items") == expected, "silver differs from the source"


def _group_hint(bootstrap, pipeline, source, prefix):
    """The offsets the consumer committed to its Kafka group (in the background, after Iceberg)."""
    from kafka import TopicPartition

    from eai_ray.ingestion.cdc.kafka import _GroupOffsets, group_id
    names = [f"{prefix}.{source}._tx", f"{prefix}.{source}.items"]
    parts = [TopicPartition(t, p) for t, n in partition_counts(bootstrap, names).items() for p in range(n)]
    g = _GroupOffsets(bootstrap, group_id(pipeline, source))
    try:
        got = wait_until(lambda: (lambda h: h if len(h) == len(parts) else None)(g.committed(parts)), timeout=30)
        return {f"{tp.topic}:{tp.partition}": o for tp, o in (got or {}).items()}
    finally:
        g.close()


def _exists(catalog, name):
    from eai_ray.storage import tables
    return tables.exists(catalog, name)


def _diagnose(broker, catalog, prefix: str, source: str):
    """EAI_DIAG=1: per source commit, what the topics hold (committed and not) against bronze."""
    import collections
    import json

    from kafka import KafkaConsumer, TopicPartition

    from eai_ray.storage import tables
    for iso in ("read_committed", "read_uncommitted"):
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level=iso, enable_auto_commit=False)
        tps = [TopicPartition(f"{prefix}.{source}._tx", 0), TopicPartition(f"{prefix}.{source}.items", 0)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        markers, evs = collections.Counter(), collections.defaultdict(set)
        mk_events = {}
        idle = 0
        while idle < 3:
            r = c.poll(timeout_ms=500)
            if not r:
                idle += 1
                continue
            for tp, ms in r.items():
                for m in ms:
                    d = json.loads(m.value)
                    if tp.topic.endswith("_tx"):
                        markers[d["commit"]] += 1
                        mk_events[d["commit"]] = d["events"]
                    else:
                        evs[d["commit"]].add(d["position"])
        c.close()
        t = tables.read(tables.load(catalog, f"bronze.{source}_items"), columns=("_eai_op", "_eai_commit", "_eai_position"))
        bronze = collections.defaultdict(set)
        for o, cm, p in zip(*[t.column(x).to_pylist() for x in ("_eai_op", "_eai_commit", "_eai_position")]):
            if o != "r":
                bronze[cm].add(p)
        no_marker = [cm for cm in evs if cm not in markers]
        incomplete = [cm for cm in markers if len(evs.get(cm, ())) < mk_events[cm]]
        not_in_bronze = [cm for cm in markers if cm not in bronze]
        partial_bronze = [cm for cm in bronze if cm in evs and bronze[cm] != evs[cm]]
        print(f"\n[{iso}] markers={len(markers)} dup_markers={sum(1 for v in markers.values() if v > 1)} "
              f"event_commits={len(evs)} no_marker={no_marker[:10]} incomplete={incomplete[:10]} "
              f"not_in_bronze={not_in_bronze[:10]} partial_bronze={partial_bronze[:10]} bronze_commits={len(bronze)}")


def test_reader_keeps_reading_after_an_aborted_transaction(private_kafka):
    """A transactional producer commits, aborts, is fenced by its successor, commits again: a reader
    that starts past the aborted transactions gets every later committed record. (noida-db 0.2.3
    lists old aborted transactions in every fetch response, and a plain kafka-python reader then
    drops all later records of the same producer: see `committed_reader`.)"""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    from eai_ray.ingestion.cdc.kafka import committed_reader

    bs, topic = private_kafka.bootstrap, f"eai.test.aborts.{int(time.time() * 1000)}"
    admin = KafkaAdminClient(bootstrap_servers=bs)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()

    def producer():
        p = KafkaProducer(bootstrap_servers=bs, transactional_id="eai-test-aborts", enable_idempotence=True)
        p.init_transactions()
        return p

    def tx(p, value, commit=True):
        p.begin_transaction()
        p.send(topic, value)
        p.flush()
        if commit:
            p.commit_transaction()

    p = producer()
    tx(p, b"c1")
    p.begin_transaction()
    p.send(topic, b"aborted")
    p.flush()
    p.abort_transaction()
    tx(p, b"c2")
    tx(p, b"open", commit=False)  # left open: its successor fences it and the broker aborts it
    p2 = producer()
    tx(p2, b"c3")
    p.close(timeout=1)
    p2.close()
    tp = TopicPartition(topic, 0)

    def read(c, start):
        c.assign([tp])
        c.seek(tp, start)
        got = []
        for _ in range(8):
            got += [m.value for msgs in c.poll(timeout_ms=250).values() for m in msgs]
        c.close()
        return got

    starts = [0, 4, 5]  # the beginning; c2 (past the first abort); past c2
    plain = [read(KafkaConsumer(bootstrap_servers=bs, isolation_level="read_committed"), s) for s in starts]
    ours = [read(committed_reader(bs), s) for s in starts]
    print(f"\nplain kafka-python reader: {plain}\ncommitted_reader: {ours}")
    assert ours == [[b"c1", b"c2", b"c3"], [b"c2", b"c3"], [b"c3"]]


def test_reader_follows_partitions_added_while_it_runs(request, private_kafka, tmp_path):
    """`kafka_partitions` raised while a consumer runs: the publisher adds partitions, the reader
    notices while it waits for a transaction's events and starts again on every partition."""
    import datetime as dt

    from eai_ray.ingestion.cdc.events import ChangeEvent, TxEnd, position
    from eai_ray.ingestion.cdc.kafka import KafkaCdcSource, KafkaPublisher
    from eai_ray.orchestration.cdc import build_source

    _connect, src = _source("postgres", request, "cdc_kafka_parts")
    cfg = parse_pipeline({"name": "parts", "state_dir": str(tmp_path / "state"),
                          "sources": [{**src, "tables": [{"name": "items"}], "cdc": {}}]})
    bs, prefix = private_kafka.bootstrap, f"eai.test.parts{int(time.time())}"

    def publish(partitions, commit, keys):
        pub = KafkaPublisher(build_source(cfg, cfg.sources[0]), bootstrap=bs, topic_prefix=prefix,
                             source_name="pg", pipeline="parts", partitions=partitions)
        pub._producer = pub._open()
        now = dt.datetime.now(dt.timezone.utc)
        evs = [ChangeEvent("items", "c", position(commit, i), commit, str(commit), now, {"id": k}, None,
                           {"id": k}) for i, k in enumerate(keys)]
        pub.publish([(TxEnd(commit, f"{commit:X}", commit_time=now), evs, [])])
        pub._close()

    reader = KafkaCdcSource(build_source(cfg, cfg.sources[0]), bootstrap=bs, topic_prefix=prefix, source_name="pg",
                            pipeline="parts", partitions=1, recheck_s=0.5)
    publish(1, 10, [1, 2])
    got, ends, error = [], [], []
    stream = reader.stream(None)

    def drain(until):
        try:
            for item in stream:
                if isinstance(item, ChangeEvent):
                    got.append(item.key["id"])
                elif isinstance(item, TxEnd):
                    ends.append(item)
                if len(ends) >= until:
                    return
        except ConnectionResetError as exc:
            error.append(str(exc))

    drain(1)
    publish(3, 11, list(range(100, 130)))  # 30 keys over 3 partitions now
    t = threading.Thread(target=drain, args=(2,), daemon=True)
    t.start()
    t.join(60)
    assert error and "partitions changed" in error[0], (error, len(ends))
    stream = reader.stream(ends[-1].resume)  # what the consumer does on this transient error
    drain(2)
    reader.close()
    assert [e.commit for e in ends] == [10, 11]
    assert sorted(got) == [1, 2] + list(range(100, 130))


def _own_broker(tmp_path):
    """A broker of this test alone (its data is wiped or frozen here)."""
    from tests.integration.cdc_services import PrivateKafka, free_port
    base = tmp_path / "kafka"
    base.mkdir()
    broker = PrivateKafka(dir=base, port=free_port())
    broker.start()
    return broker


def _kafka_pipeline(engine, request, tmp_path, broker, db_name, **cdc):
    connect, src = _source(engine, request, db_name)
    raw = {"name": f"{db_name}", "state_dir": str(tmp_path / "state"),
           "sources": [{**src, "tables": [{"name": "items"}],
                        "cdc": {"transport": "kafka", "kafka_bootstrap": broker.bootstrap,
                                "topic_prefix": f"eai.{db_name}", "flush_seconds": 0.3, **cdc}}]}
    return connect, src, raw


def _start_publisher(raw):
    """The publisher in a thread of this process: the test reads its status() directly."""
    from eai_ray.orchestration.cdc import build_publisher
    cfg = parse_pipeline(raw)
    pub = build_publisher(cfg, cfg.sources[0].name)
    stop = threading.Event()
    t = threading.Thread(target=pub.run, args=(stop,), daemon=True)
    t.start()
    return pub, stop, t


def _caught_up(catalog, src, work, connect):
    def check():
        ops, _rows, _distinct = bronze_counts(catalog, f"bronze.{src['name']}_items")
        streamed = sum(v for k, v in ops.items() if k != "r")
        return streamed >= work.total and \
            silver_rows(catalog, f"silver.{src['name']}_items") == source_rows(connect, "items")
    return check


def _assert_exactly_once(catalog, src, work, connect):
    ops, rows, distinct = bronze_counts(catalog, f"bronze.{src['name']}_items", streamed_only=True)
    assert rows == distinct, "bronze holds a change twice"
    assert (ops.get("c", 0), ops.get("u", 0), ops.get("d", 0)) == (work.counts["c"], work.counts["u"],
                                                                     work.counts["d"]), (dict(ops), dict(work.counts))
    assert silver_rows(catalog, f"silver.{src['name']}_items") == source_rows(connect, "items")


@pytest.mark.parametrize("engine", ["mariadb", "postgres"])
def test_publisher_carries_on_after_the_broker_lost_its_log(engine, request, tmp_path):
    """The broker comes back without its log (noida-db keeps only what it flushed; here: its data
    folder is gone), after the consumer already committed Kafka offsets to Iceberg. Before the fix
    the MariaDB publisher found no marker on the control topic, could not use the consumer's Kafka
    token as a start, and waited forever, publishing nothing (the consumer at position 0, end 0).
    Now it resumes from the GTID the consumer's token carries, and the reader, whose stored offsets
    no longer match the log, reads the topics from their beginning."""
    import shutil

    broker = _own_broker(tmp_path)
    connect, src, raw = _kafka_pipeline(engine, request, tmp_path, broker, f"lostlog_{engine[:2]}", stall_seconds=20)
    work = Workload(connect, "items", seed=11, ids=200)
    work.seed_rows(50)
    catalog = open_catalog(parse_pipeline(raw))
    consumer = Proc(_run_consumer, raw)
    consumer.start()
    pub, stop, thread = _start_publisher(raw)
    try:
        assert wait_until(lambda: _exists(catalog, f"silver.{src['name']}_items"), timeout=60), "no snapshot"
        work.run(3, 100.0)
        assert wait_until(_caught_up(catalog, src, work, connect), timeout=90, interval=0.5), pub.status()
        broker.stop()
        shutil.rmtree(broker.dir / "data")  # the broker lost everything it held
        broker.start()
        work.run(3, 100.0)
        ok = wait_until(_caught_up(catalog, src, work, connect), timeout=120, interval=0.5)
        status = pub.status()
        print(f"\n[{engine}] publisher after the lost log: {status}")
        assert ok, f"not caught up after the broker lost its log; publisher {status}"
        _assert_exactly_once(catalog, src, work, connect)
    finally:
        stop.set()
        consumer.kill()
        thread.join(30)
        broker.stop()


def test_publisher_stall_is_detected_reported_and_restarted(request, tmp_path):
    """A publisher that can publish nothing (its broker frozen: SIGSTOP) while MariaDB writes on is a
    detected fault: after `stall_seconds` its status says `stalled`, with the source's GTID and the
    last published one as evidence, it restarts from its resume point, and once the broker thaws
    it publishes again and everything arrives exactly once."""
    broker = _own_broker(tmp_path)
    connect, src, raw = _kafka_pipeline("mariadb", request, tmp_path, broker, "stall_my", stall_seconds=3)
    work = Workload(connect, "items", seed=12, ids=200)
    work.seed_rows(50)
    catalog = open_catalog(parse_pipeline(raw))
    consumer = Proc(_run_consumer, raw)
    consumer.start()
    pub, stop, thread = _start_publisher(raw)
    frozen = False
    try:
        assert wait_until(lambda: _exists(catalog, f"silver.{src['name']}_items"), timeout=60), "no snapshot"
        work.run(2, 100.0)
        assert wait_until(_caught_up(catalog, src, work, connect), timeout=90, interval=0.5), pub.status()
        assert pub.status()["state"] == "publishing" and pub.status()["stalls"] == 0
        os.killpg(broker.proc.pid, signal.SIGSTOP)  # the broker's own session: only this broker
        frozen = True
        writer = threading.Thread(target=work.run, args=(4, 100.0))
        writer.start()
        st = wait_until(lambda: (lambda s: s if s["state"] == "stalled" else None)(pub.status()), timeout=60,
                        interval=0.2)
        writer.join()
        print(f"\nstalled publisher status: {st}")
        assert st, f"no stall detected: {pub.status()}"
        ev = st["stall"]
        assert ev["behind"] > 0 and ev["source_position"] > (ev["published_position"] or 0)
        assert ev["source_head"].startswith("0-1-") and ev["stalled_for_s"] >= 3
        os.killpg(broker.proc.pid, signal.SIGCONT)
        frozen = False
        ok = wait_until(_caught_up(catalog, src, work, connect), timeout=150, interval=0.5)
        final = pub.status()
        print(f"publisher after the thaw: {final}")
        assert ok, f"not caught up after the broker thawed: {final}"
        assert final["stalls"] >= 1 and final["restarts"] >= 1 and final["state"] == "publishing"
        _assert_exactly_once(catalog, src, work, connect)
    finally:
        if frozen:
            os.killpg(broker.proc.pid, signal.SIGCONT)
        stop.set()
        consumer.kill()
        thread.join(60)
        broker.stop()
