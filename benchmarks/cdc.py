"""PostgreSQL CDC: source commit -> Iceberg silver, against a bare replication reader (the floor).

A private PostgreSQL 15 (wal_level=logical, started from the installed binaries in a temp folder,
stopped at the end) holds one table. Two slots are created before any change is written: ours
(through the consumer's own setup) and the floor's. Then:

1. Throughput (backlog drain): --changes change events (half inserts, half updates, in
   1,000-row transactions) are committed while nobody reads. The floor is a bare loop over
   psycopg2's replication stream that decodes every pgoutput message to text tuples (the same
   decoder ours uses) and acknowledges every 1,000 messages, nothing else. Ours is the direct
   transport: CdcConsumer -> micro-batches -> bronze change log + silver MERGE by position, in
   this process, with the garbage-collector settings the CDC actor uses (tune_gc_for_streaming).
   Events/s = change events / wall time until the last commit is visible.
2. Latency at a fixed offered load (--rate changes/s, 10-row transactions, --seconds long):
   commit-to-visible = the moment the silver MERGE holding the change committed minus the
   source commit timestamp, per change; p50 and p99 are printed.

3. Kafka transport (extra lines, same offered load): a private noida-db broker; the publisher runs
   in its own process (transactional producer, per-table topics), the consumer-group reader
   in this one; commit-to-visible p50/p99 and the drain rate of the offered load are printed.

    .venv/bin/python benchmarks/cdc.py                 # 100k-change backlog, 2,000/s for 15 s
    .venv/bin/python benchmarks/cdc.py --quick
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import psycopg2  # noqa: E402
import psycopg2.extras  # noqa: E402
from _common import result_line, say  # noqa: E402

from eai_ray.config import parse_pipeline  # noqa: E402
from eai_ray.ingestion.cdc.events import ChangeEvent  # noqa: E402
from eai_ray.ingestion.cdc.pgoutput import PgOutputDecoder  # noqa: E402
from eai_ray.orchestration.cdc import build_consumer  # noqa: E402
from eai_ray.runtime import tune_gc_for_streaming  # noqa: E402
from tests.integration.cdc_services import start_postgres  # noqa: E402

TABLE = "CREATE TABLE bench (id bigint PRIMARY KEY, k int, name text, qty bigint, price numeric(12,2))"


def write_backlog(conn, changes: int, start_id: int = 1) -> int:
    """Half inserts, half updates of the inserted rows, in 1,000-row transactions."""
    cur = conn.cursor()
    inserts = changes // 2
    done, i = 0, start_id
    while done < inserts:
        n = min(1000, inserts - done)
        cur.execute("INSERT INTO bench SELECT g, g %% 10, md5(g::text), g, (g %% 1000) / 10.0 "
                    "FROM generate_series(%s, %s) g", (i, i + n - 1))
        conn.commit()
        cur.execute("UPDATE bench SET qty = qty + 1, name = name || 'x' WHERE id BETWEEN %s AND %s", (i, i + n - 1))
        conn.commit()
        done += n
        i += n
    return 2 * done


def floor_drain(pg, db: str, slot: str, publication: str, expected: int) -> float:
    """Events/s of a bare read + decode loop over the same stream."""
    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=db,
                            connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    decoder = PgOutputDecoder(tables={"public.bench": "bench"})
    t0 = time.perf_counter()
    cur.start_replication(slot_name=slot, decode=False, start_lsn=0,
                          options={"proto_version": "1", "publication_names": publication})
    seen, msgs = 0, 0
    while seen < expected:
        msg = cur.read_message()
        if msg is None:
            select.select([cur], [], [], 0.5)
            continue
        for item in decoder.decode(msg.payload, msg.data_start):
            if isinstance(item, ChangeEvent):
                seen += 1
        msgs += 1
        if msgs % 1000 == 0:
            cur.send_feedback(flush_lsn=msg.data_start)
    elapsed = time.perf_counter() - t0
    conn.close()
    return seen / elapsed


class Consumer:
    def __init__(self, cfg):
        self.consumer = build_consumer(cfg, "pg")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)

    def start(self):
        self.thread.start()
        while self.consumer.status.state != "streaming":
            if self.consumer.status.state == "failed" or not self.thread.is_alive():
                raise RuntimeError(f"consumer failed: {self.consumer.status.last_error}")
            time.sleep(0.05)
        return self

    def wait_events(self, n: int, timeout: float = 600) -> None:
        end = time.time() + timeout
        while self.consumer.status.events < n:
            if time.time() > end:
                raise RuntimeError(f"consumer stuck at {self.consumer.status.events}/{n} events: "
                                   f"{self.consumer.status.last_error}")
            time.sleep(0.01)

    def close(self):
        self.stop.set()
        self.thread.join(30)


def offered_load(conn, rate: float, seconds: float, start_id: int) -> int:
    """10-row transactions (5 inserts + 5 updates) paced to `rate` changes/s."""
    cur = conn.cursor()
    t0 = time.perf_counter()
    n, i = 0, start_id
    while time.perf_counter() - t0 < seconds:
        cur.execute("INSERT INTO bench SELECT g, g %% 10, md5(g::text), g, 1.5 FROM generate_series(%s, %s) g",
                    (i, i + 4))
        cur.execute("UPDATE bench SET qty = qty + 1 WHERE id BETWEEN %s AND %s", (i - 5000, i - 4996))
        n += 5 + cur.rowcount
        conn.commit()
        i += 5
        due = t0 + (n / rate)
        sleep = due - time.perf_counter()
        if sleep > 0:
            time.sleep(sleep)
    return n


def _publisher(raw: dict) -> None:  # its own process
    from eai_ray.orchestration.cdc import build_publisher
    from eai_ray.runtime import tune_gc_for_streaming
    pub = build_publisher(parse_pipeline(raw), "pg")
    tune_gc_for_streaming()  # as the publisher actor does
    pub.run(threading.Event())


def kafka_latency(pg, db: str, base: Path, conn, args) -> None:
    import multiprocessing as mp

    from tests.integration.cdc_services import PrivateKafka, free_port

    (base / "kafka").mkdir()
    broker = PrivateKafka(dir=base / "kafka", port=free_port())
    broker.start()
    pub = None
    try:
        raw = {"name": "benchk", "state_dir": str(base / "state_kafka"),
               "sources": [{"kind": "postgres", "name": "pg", "port": pg.port, "user": "postgres", "database": db,
                            "tables": [{"name": "bench"}],
                            "cdc": {"transport": "kafka", "kafka_bootstrap": broker.bootstrap,
                                    "slot": "eai_bench_kafka", "publication": "eai_bench_kafka",
                                    "flush_rows": 5_000, "flush_seconds": 0.3}}]}
        say(f"kafka: snapshot, then {args.rate:,.0f} changes/s offered for {args.seconds:.0f} s ...")
        ours = Consumer(parse_pipeline(raw)).start()  # snapshot + slot; then reads the topics
        pub = mp.get_context("spawn").Process(target=_publisher, args=(raw,), daemon=True)
        pub.start()
        time.sleep(3.0)  # publisher process up (imports, producer init)
        before = ours.consumer.status.events
        ours.consumer._latency.clear()
        t0 = time.perf_counter()
        offered = offered_load(conn, args.rate, args.seconds, start_id=20_000_000)
        ours.wait_events(before + offered, timeout=120)
        drain = offered / (time.perf_counter() - t0)
        values = sorted(ours.consumer.latencies())
        ours.close()
        p50 = values[len(values) // 2]
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        achieved = offered / args.seconds
        say(f"  kafka: offered {achieved:,.0f} changes/s; drained {drain:,.0f}/s; "
            f"commit-to-visible p50={p50:.0f} ms p99={p99:.0f} ms ({len(values):,} changes)")
        print(f"LATENCY cdc transport=kafka offered={achieved:.0f}/s drained={drain:.0f}/s "
              f"p50_ms={p50:.0f} p99_ms={p99:.0f}")
    finally:
        if pub is not None and pub.is_alive():
            os.kill(pub.pid, 9)  # our own child, by PID
            pub.join(10)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.changes, args.seconds = 20_000, 6.0
    base = Path(tempfile.mkdtemp(prefix="eai-cdc-bench-", dir="/tmp"))
    os.chmod(base, 0o755)
    pg = start_postgres(base / "pg")
    try:
        db = pg.create_database("cdc_bench")
        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=db)
        conn.cursor().execute(TABLE)
        conn.commit()
        src = {"kind": "postgres", "name": "pg", "port": pg.port, "user": "postgres", "database": db,
               "tables": [{"name": "bench"}], "cdc": {"flush_rows": 20_000, "flush_seconds": 1.0}}
        cfg = parse_pipeline({"name": "bench", "state_dir": str(base / "state"), "sources": [src]})
        # our slot and publication (consumer setup), then the floor's slot on the same publication
        ours = Consumer(cfg).start()
        ours.close()
        publication = ours.consumer.source.publication
        c = pg.connect(db)
        c.cursor().execute("SELECT pg_create_logical_replication_slot('floor', 'pgoutput')")
        c.close()

        say(f"writing a backlog of {args.changes:,} changes ...")
        total = write_backlog(conn, args.changes)

        say("floor: bare read + decode of the backlog ...")
        floor = floor_drain(pg, db, "floor", publication, total)
        say(f"  floor: {floor:,.0f} events/s")

        say("ours: direct transport, backlog -> bronze + silver ...")
        ours = Consumer(cfg)
        tune_gc_for_streaming()  # as the CDC actor and `eai cdc run` do at start (after the floor ran)
        t0 = time.perf_counter()
        ours.start()
        ours.wait_events(total)
        ours_rate = total / (time.perf_counter() - t0)
        st = ours.consumer.status
        say(f"  ours: {ours_rate:,.0f} events/s ({st.flushes} flushes)")
        ours.close()

        say(f"latency: {args.rate:,.0f} changes/s offered for {args.seconds:.0f} s ...")
        cfg_lat = cfg.model_copy(deep=True)
        cfg_lat.sources[0].cdc.flush_seconds = 0.3
        cfg_lat.sources[0].cdc.flush_rows = 5_000
        lat = Consumer(cfg_lat).start()
        before = lat.consumer.status.events
        lat.consumer._latency.clear()
        offered = offered_load(conn, args.rate, args.seconds, start_id=10_000_000)
        lat.wait_events(before + offered, timeout=120)
        values = sorted(lat.consumer.latencies())
        lat.close()
        p50 = values[len(values) // 2]
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        achieved = offered / args.seconds
        say(f"  offered {achieved:,.0f} changes/s; commit-to-visible p50={p50:.0f} ms p99={p99:.0f} ms "
            f"(mean {statistics.mean(values):.0f} ms, {len(values):,} changes)")
        print(f"LATENCY cdc transport=direct offered={achieved:.0f}/s p50_ms={p50:.0f} p99_ms={p99:.0f}")
        try:
            kafka_latency(pg, db, base, conn, args)
        except Exception as exc:  # noqa: BLE001 - the extra line must not hide the RESULT line
            print(f"TRANSPORT kafka: not measured ({type(exc).__name__}: {exc})")
        conn.close()
        print(result_line("cdc", ours_rate, floor))
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
