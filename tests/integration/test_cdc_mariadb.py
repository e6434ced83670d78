"""MariaDB binlog CDC against a private server: a connection lost in the middle of a transaction.

mysql-replication reconnects by itself after a lost connection and starts again from where the
stream began, so the first rows of a half-read transaction would come twice, or (through Kafka)
be counted under another transaction's marker. The source must instead fail with a transient
error, so that its caller restarts from the position it has committed.
"""
from __future__ import annotations

import time

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.errors import SourceUnavailable
from eai_ray.ingestion.cdc.events import ChangeEvent, TxEnd
from eai_ray.orchestration.cdc import build_source
from tests.integration.cdc_workload import my_schema

pytestmark = pytest.mark.integration

ROWS = 20_000  # one transaction, many binlog row events


def test_binlog_connection_lost_mid_transaction_restarts_cleanly(private_mariadb, tmp_path):
    import pymysql

    my = private_mariadb
    db = my.create_database("cdc_midtx")
    connect = lambda: pymysql.connect(host="127.0.0.1", port=my.port, user="root", database=db,  # noqa: E731
                                      autocommit=False)
    conn = connect()
    cur = conn.cursor()
    cur.execute(my_schema("items"))
    conn.commit()
    cfg = parse_pipeline({"name": "midtx", "state_dir": str(tmp_path / "state"), "sources": [
        {"kind": "mariadb", "name": "my", "port": my.port, "user": "root", "database": db,
         "tables": [{"name": "items"}], "cdc": {}}]})
    source = build_source(cfg, cfg.sources[0])
    source.prepare()
    cur.execute("SELECT @@gtid_binlog_pos")
    start = cur.fetchone()[0]
    cur.executemany("INSERT INTO items (id, k, name, qty) VALUES (%s, %s, %s, %s)",
                    [(i, i % 7, "x" * 200, i) for i in range(ROWS)])
    conn.commit()
    cur.execute("INSERT INTO items (id, k) VALUES (%s, %s)", (ROWS, 1))
    conn.commit()
    conn.close()

    seen: list[ChangeEvent] = []
    killed = False
    deadline = time.time() + 60
    with pytest.raises(SourceUnavailable, match="binlog connection lost"):
        for item in source.stream(start):
            assert time.time() < deadline, "the stream neither failed nor ended"
            if isinstance(item, ChangeEvent):
                seen.append(item)
                if not killed:
                    admin = my.connect()
                    c = admin.cursor()
                    c.execute("SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'")
                    for (tid,) in c.fetchall():
                        c.execute(f"KILL {tid}")
                    admin.close()
                    killed = True
            assert not isinstance(item, TxEnd), "a half-read transaction must not end"
    source.close()
    positions = [e.position for e in seen]
    print(f"\nrows handed on before the lost connection was noticed: {len(seen)} of {ROWS}")
    assert len(set(positions)) == len(positions), "a row came twice"
    assert 0 < len(seen) < ROWS
    # from the committed start, a fresh stream gives the whole transaction once, then the next one
    got, ends = [], []
    for item in source.stream(start):
        if isinstance(item, ChangeEvent):
            got.append(item)
        elif isinstance(item, TxEnd):
            ends.append(item)
            if len(ends) == 2:
                break
    source.close()
    assert [len(got)] == [ROWS + 1] and ends[0].events == ROWS
    assert len({e.position for e in got}) == ROWS + 1
