"""PostgreSQL CDC against a private wal_level=logical server: snapshot handoff, bad input, slot loss,
schema change, and the `eai cdc` commands."""
from __future__ import annotations

import threading
import time

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.orchestration.cdc import build_consumer
from eai_ray.storage import tables
from eai_ray.storage.catalog import open_catalog
from tests.integration.cdc_workload import Workload, bronze_counts, pg_schema, silver_rows, source_rows, wait_until

pytestmark = pytest.mark.integration


def _db(pg, name):
    import psycopg2
    db = pg.create_database(name)
    return lambda: psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=db)


def _cfg(pg, db, tmp_path, **extra):
    src = {"kind": "postgres", "name": "pg", "port": pg.port, "user": "postgres", "database": db,
           "tables": extra.pop("tables", [{"name": "items"}]), "cdc": {"flush_seconds": 0.2, **extra.pop("cdc", {})}}
    return parse_pipeline({"name": extra.pop("name", "t"), "state_dir": str(tmp_path / "state"), "sources": [src],
                           **extra})


class Running:
    """A consumer in a thread of this process (no Ray): the logic under test, plain."""

    def __init__(self, cfg):
        self.consumer = build_consumer(cfg, cfg.sources[0].name)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.consumer

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def test_snapshot_to_stream_handoff_neither_misses_nor_doubles(private_postgres, tmp_path):
    connect = _db(private_postgres, "cdc_handoff")
    c = connect()
    c.cursor().execute(pg_schema("items"))
    c.commit()
    c.close()
    work = Workload(connect, "items", seed=11, ids=3000)
    work.seed_rows(3000)  # large enough that the snapshot takes a while
    writer = threading.Thread(target=work.run, args=(6.0, 400.0))
    cfg = _cfg(private_postgres, "cdc_handoff", tmp_path, name="handoff")
    writer.start()  # changes before, during and after the snapshot
    time.sleep(0.5)
    with Running(cfg) as consumer:
        writer.join()
        expected = source_rows(connect, "items")
        catalog = open_catalog(cfg)
        ok = wait_until(lambda: silver_rows(catalog, "silver.pg_items") == expected, timeout=60)
    ops, rows, distinct = bronze_counts(catalog, "bronze.pg_items", streamed_only=True)
    print(f"\nhandoff: snapshot rows={ops['r']} streamed={rows} workload changes={work.total} "
          f"status={consumer.status.state}")
    assert ok, "silver differs from the source after the handoff"
    assert rows == distinct
    assert 0 < rows < work.total + 1  # part of the workload landed in the snapshot, the rest streamed once


def test_bad_input_is_quarantined_and_the_stream_goes_on(private_postgres, tmp_path):
    connect = _db(private_postgres, "cdc_bad")
    c = connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE items (id int PRIMARY KEY, qty text)")
    cur.execute("CREATE TABLE other (id int PRIMARY KEY)")
    c.commit()
    cfg = _cfg(private_postgres, "cdc_bad", tmp_path, name="bad",
               silver=[{"name": "items", "source": "pg.items", "primary_key": ["id"],
                        "columns": {"id": {"type": "int32"}, "qty": {"type": "int32"}}}])
    with Running(cfg) as consumer:
        assert wait_until(lambda: consumer.status.state == "streaming", timeout=30)
        # an unknown table: someone added a table to our publication that the pipeline does not name
        cur.execute(f"ALTER PUBLICATION {consumer.source.publication} ADD TABLE other")
        cur.execute("INSERT INTO other VALUES (1)")
        cur.execute("INSERT INTO items VALUES (1, '10'), (2, 'twelve'), (3, '30')")
        c.commit()
        catalog = open_catalog(cfg)
        assert wait_until(lambda: tables.exists(catalog, "silver.items") and len(
            tables.read(tables.load(catalog, "silver.items"))) == 2 and tables.exists(catalog, "quarantine.pg_cdc"),
            timeout=30)
        cur.execute("INSERT INTO items VALUES (4, '40')")  # the stream goes on
        c.commit()
        assert wait_until(lambda: len(tables.read(tables.load(catalog, "silver.items"))) == 3, timeout=30)
    q = tables.read(tables.load(catalog, "quarantine.items")).to_pylist()
    assert len(q) == 1 and "'twelve' is not a valid int32" in q[0]["_eai_reason"]
    rej = tables.read(tables.load(catalog, "quarantine.pg_cdc")).to_pylist()
    assert any("unknown table public.other" in r["_eai_reason"] for r in rej)
    assert sorted(r["id"] for r in tables.read(tables.load(catalog, "silver.items")).to_pylist()) == [1, 3, 4]
    c.close()


def test_slot_lost_resnapshots_only_its_tables_and_schema_change_flows(private_postgres, tmp_path):
    connect = _db(private_postgres, "cdc_slot")
    c = connect()
    c.autocommit = True
    cur = c.cursor()
    cur.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    cur.execute("CREATE TABLE items2 (id int PRIMARY KEY, name text)")
    cur.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
    cfg = _cfg(private_postgres, "cdc_slot", tmp_path, name="slot", tables=[{"name": "items"}])
    catalog = open_catalog(cfg)
    with Running(cfg) as consumer:
        assert wait_until(lambda: consumer.status.state == "streaming", timeout=30)
        cur.execute("INSERT INTO items VALUES (3, 'c')")
        assert wait_until(lambda: len(tables.read(tables.load(catalog, "silver.pg_items"))) == 3, timeout=30)
        cur.execute("ALTER TABLE items ADD COLUMN extra int")  # a source schema change
        cur.execute("INSERT INTO items VALUES (4, 'd', 44)")
        assert wait_until(lambda: "extra" in tables.load(catalog, "silver.pg_items").schema().column_names
                          and len(tables.read(tables.load(catalog, "silver.pg_items"))) == 4, timeout=30)
    # the slot disappears while the consumer is down; changes made meanwhile are not in any log we read
    def drop():  # the walsender of the stopped consumer ends a moment later
        cur.execute("SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active", (consumer.source.slot,))
        return cur.fetchone()[0] == 1
    assert wait_until(drop, timeout=20, interval=0.2)
    cur.execute("DELETE FROM items WHERE id = 1")
    cur.execute("UPDATE items SET name = 'bb' WHERE id = 2")
    cfg2 = _cfg(private_postgres, "cdc_slot", tmp_path, name="slot", tables=[{"name": "items"}, {"name": "items2"}])
    with Running(cfg2) as consumer2:
        assert wait_until(lambda: consumer2.status.state == "streaming", timeout=30)
        cur.execute("INSERT INTO items2 VALUES (1, 'x')")
        assert wait_until(lambda: tables.exists(catalog, "silver.pg_items2") and len(
            tables.read(tables.load(catalog, "silver.pg_items2"))) == 1, timeout=30)
    rows = sorted((r["id"], r["name"], r["extra"]) for r in tables.read(tables.load(catalog, "silver.pg_items")).to_pylist())
    assert rows == [(2, "bb", None), (3, "c", None), (4, "d", 44)]
    assert consumer2.status.resnapshots == ["items,items2"]
    c.close()
