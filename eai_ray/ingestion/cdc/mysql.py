"""MariaDB/MySQL binlog CDC through mysql-replication, with GTID positions.

- ``prepare``: checks ``log_bin``, ``binlog_format=ROW``, ``binlog_row_image=FULL`` and (MariaDB)
  ``binlog_row_metadata=FULL`` (without it rows arrive as UNKNOWN_COL0..n), and a key per table.
- ``snapshot``: ``START TRANSACTION WITH CONSISTENT SNAPSHOT``; MariaDB reports the binlog GTID
  position of exactly that snapshot (``binlog_snapshot_gtid_pos``), so the stream resumes right
  after it with no lock and no gap.
- ``stream``: row events from ``auto_position=<gtid>``; a transaction ends at its XID event (or
  at a DDL statement). The event position is ``<GTID sequence number><index>``; the resume token
  is the GTID itself. A purged position raises ``SlotLost`` (the remedy: re-snapshot).

One GTID domain (a single primary) is assumed: positions compare by sequence number.

Example::

    src = MySQLCdcSource(mariadb_source_cfg, pipeline="shop")
    src.prepare()
    for item in src.stream("0-1-42"): ...
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pymysql

from eai_ray.config import CdcConfig, MySQLSource
from eai_ray.errors import CdcSetupError, SlotLost, SourceUnavailable
from eai_ray.ingestion._db import first_line, scrub
from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, Op, SnapshotChunk, TableSpec, TxEnd, end_of, position
from eai_ray.ingestion.mysql import ident

_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def gtid_seq(gtid: str | None) -> int:
    """Sequence number of a single-domain GTID position ('0-1-42' -> 42); 0 for none."""
    if not gtid:
        return 0
    m = _GTID.match(gtid.split(",")[0].strip())
    if not m:
        raise ValueError(f"not a MariaDB GTID: {gtid!r}")
    return int(m.group(3))


class MySQLCdcSource:
    """CdcSource for one MariaDB (or MySQL with GTIDs) database."""

    kind = "mariadb"
    has_slot_state = False  # the position lives only in the Iceberg snapshot summaries

    def __init__(self, source: MySQLSource, *, pipeline: str, heartbeat: float = 0.25) -> None:
        from eai_ray.ingestion.mysql import MySQLConnector

        self.source = source
        self.cfg: CdcConfig = source.cdc or CdcConfig()
        self.heartbeat = heartbeat
        self._connector = MySQLConnector(source)
        self._specs: list[TableSpec] | None = None
        self._stream: Any = None  # a BinLogStreamReader (untyped)
        self._password: str | None = None
        self._schema_version = 1
        self.dump_thread_id: int | None = None

    def _settings(self) -> dict[str, Any]:
        s = self.source
        self._password = s.password.resolve() if s.password else None
        return {"host": s.host, "port": s.port or 3306, "user": s.user or "root", "passwd": self._password or "",
                "connect_timeout": max(1, round(s.connect_timeout))}

    def _connect(self):
        st = self._settings()
        try:
            return pymysql.connect(host=st["host"], port=st["port"], user=st["user"], password=st["passwd"],
                                   database=self.source.database, connect_timeout=st["connect_timeout"],
                                   charset="utf8mb4", autocommit=True, init_command="SET time_zone = '+00:00'")
        except pymysql.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> Exception:
        return SourceUnavailable(f"{self.source.kind} CDC source '{self.source.name}': "
                                 f"{scrub(first_line(exc), self._password)}", source=self.source.name)

    def tables(self) -> list[TableSpec]:
        if self._specs is None:
            out = []
            for t in self.source.tables:
                d = self._connector.discover(t.name)
                assert t.table is not None  # CDC reads tables; DbTable sets 'table' on every entry without a query
                # an entry's own `schema:` (its database) wins, as in the batch connector
                db, _, name = (t.schema_, ".", t.table) if t.schema_ else t.table.rpartition(".")
                out.append(TableSpec(t.name, f"{db or self.source.database}.{name}",
                                     list(t.primary_key or d.primary_key), {c.name: c.type for c in d.columns}))
            self._specs = out
        return self._specs

    def refresh(self) -> list[TableSpec]:
        self._specs = None
        self._connector.close()
        return self.tables()

    def prepare(self) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW VARIABLES WHERE Variable_name IN "
                            "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')")
                v = {k: str(val).upper() for k, val in cur.fetchall()}
        finally:
            conn.close()
        need = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL"}
        if "binlog_row_metadata" in v:
            need["binlog_row_metadata"] = "FULL"
        for k, want in need.items():
            if v.get(k) != want:
                raise CdcSetupError(f"{self.source.kind} CDC source '{self.source.name}': {k} is {v.get(k)!r}",
                                    source=self.source.name, expected=f"{k}={want} in the server configuration")
        for spec in self.tables():
            if not spec.key:
                raise CdcSetupError(f"{self.source.kind} CDC source '{self.source.name}': table {spec.source_table} "
                                    "has no primary key", source=self.source.name, table=spec.source_table,
                                    expected="a primary key, or primary_key: [...] in the YAML")

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, tables: list[str], *, new_main_slot: bool = False) -> Iterator[SnapshotChunk]:
        specs = {s.name: s for s in self.tables()}
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                # MariaDB: the binlog coordinates of exactly this snapshot, turned into a GTID position
                cur.execute("SHOW STATUS WHERE Variable_name IN ('Binlog_snapshot_file', 'Binlog_snapshot_position')")
                coords = dict(cur.fetchall())
                if coords.get("Binlog_snapshot_file"):
                    cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (coords["Binlog_snapshot_file"],
                                                                   int(coords["Binlog_snapshot_position"])))
                    gtid = cur.fetchone()[0]
                else:
                    raise CdcSetupError(f"{self.source.kind} CDC source '{self.source.name}': the server reports "
                                        "no binlog snapshot position", source=self.source.name,
                                        expected="MariaDB with log_bin=ON")
                pos = end_of(gtid_seq(gtid))
                for t in tables:
                    spec = specs[t]
                    cols = list(spec.types)
                    db, name = spec.source_table.split(".", 1)
                    cur.execute(f"SELECT {', '.join(ident(c) for c in cols)} FROM {ident(db)}.{ident(name)}")
                    rows = cur.fetchall()
                    data = {c: pa.array([_text(r[i]) for r in rows], pa.string()) for i, c in enumerate(cols)}
                    yield SnapshotChunk(t, pa.table(data), pos, resume=gtid or "")
                cur.execute("COMMIT")
        except pymysql.Error as exc:
            raise self._error(exc) from None
        finally:
            conn.close()

    # ------------------------------------------------------------------ stream
    def stream(self, resume: str | None = None) -> Iterator:
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, XidEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        specs = self.tables()
        by_table = {s.source_table: s for s in specs}
        self.close()
        self._stream = BinLogStreamReader(
            connection_settings=self._settings(), server_id=self.cfg.server_id, blocking=True, resume_stream=True,
            is_mariadb=self.source.kind == "mariadb", auto_position=resume or None,
            only_events=[MariadbGtidEvent, XidEvent, QueryEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent,
                         HeartbeatLogEvent],
            only_schemas=[self.source.database], slave_heartbeat=self.heartbeat,
            # tables nobody captures are not decoded at all (they are not 'unknown', just not ours)
            only_tables=[s.source_table.split(".", 1)[1] for s in specs])
        gtid, seq, idx, ts = None, 0, 0, None
        conn = None
        reader = self._stream
        op: Op
        before: dict[str, str | None] | None
        after: dict[str, str | None] | None
        try:
            for ev in reader:
                if self._stream is not reader:  # closed from another thread (a stall's restart)
                    raise SourceUnavailable(f"{self.source.kind} CDC source '{self.source.name}': binlog stream "
                                            "closed", source=self.source.name)
                if reader._stream_connection is not conn:
                    if conn is not None:
                        # mysql-replication reconnected by itself after a lost connection: it restarts
                        # from where this stream began, perhaps in the middle of a transaction whose
                        # first rows were already handed on. Start over from the caller's position.
                        raise SourceUnavailable(f"{self.source.kind} CDC source '{self.source.name}': binlog "
                                                "connection lost", source=self.source.name)
                    conn = reader._stream_connection
                if isinstance(ev, HeartbeatLogEvent):
                    yield None
                    continue
                if isinstance(ev, MariadbGtidEvent):
                    gtid = ev.gtid
                    seq, idx = gtid_seq(gtid), 0
                    ts = dt.datetime.fromtimestamp(ev.timestamp, dt.timezone.utc)
                    continue
                if isinstance(ev, XidEvent):
                    if gtid:
                        yield TxEnd(commit=seq, resume=gtid, tx_id=str(ev.xid), commit_time=ts, events=idx)
                    gtid = None
                    continue
                if isinstance(ev, QueryEvent):
                    q = (ev.query or "").strip().upper()
                    if q in ("BEGIN", "COMMIT"):
                        if q == "COMMIT" and gtid:
                            yield TxEnd(commit=seq, resume=gtid, commit_time=ts, events=idx)
                            gtid = None
                        continue
                    if gtid:  # DDL: its own transaction; rediscover column types afterwards
                        self._schema_version += 1
                        yield TxEnd(commit=seq, resume=gtid, commit_time=ts, events=idx)
                        gtid = None
                    continue
                qual = f"{ev.schema}.{ev.table}"
                spec = by_table.get(qual)
                for row in ev.rows:
                    idx += 1
                    pos = position(seq, idx)
                    if spec is None:
                        yield BadEvent(f"change for unknown table {qual} (not in the pipeline)", str(row)[:2000],
                                       pos, qual)
                        continue
                    try:
                        if isinstance(ev, WriteRowsEvent):
                            op, before, after = "c", None, _texts(row["values"])
                        elif isinstance(ev, UpdateRowsEvent):
                            op, before, after = "u", _texts(row["before_values"]), _texts(row["after_values"])
                        else:
                            op, before, after = "d", _texts(row["values"]), None
                        src = after if after is not None else before
                        assert src is not None  # every branch above sets before or after
                        if any(k not in src for k in spec.key):
                            raise KeyError(f"row lacks key columns {spec.key} (binlog_row_metadata=FULL?)")
                    except (KeyError, TypeError, ValueError) as exc:
                        yield BadEvent(f"undecodable binlog row: {exc}", str(row)[:2000], pos, qual)
                        continue
                    key = {k: src.get(k) for k in spec.key}
                    if (op == "u" and before is not None and after is not None
                            and any(before.get(k) != after.get(k) for k in spec.key)):
                        yield ChangeEvent(spec.name, "d", pos, seq, gtid or "", ts,
                                          {k: before.get(k) for k in spec.key}, before, None,
                                          schema_version=self._schema_version)
                        idx += 1
                        pos = position(seq, idx)
                    yield ChangeEvent(spec.name, op, pos, seq, gtid or "", ts, key, before, after,
                                      schema_version=self._schema_version)
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1236:  # the requested GTID is no longer in the binlog
                raise SlotLost(f"{self.source.kind} CDC source '{self.source.name}': binlog position {resume} "
                               f"was purged: {exc.args[1]}", source=self.source.name, resume=resume,
                               tables=[s.name for s in specs]) from None
            raise self._error(exc) from None
        except pymysql.Error as exc:
            raise self._error(exc) from None

    def ack(self, resume: str) -> None:
        """Nothing to tell the server: the binlog position lives in the Iceberg snapshots."""

    def lag(self) -> dict[str, Any]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@gtid_binlog_pos")
                pos = cur.fetchone()[0]
            return {"gtid_binlog_pos": pos, "server_seq": gtid_seq(pos)}
        finally:
            conn.close()

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - a broken stream
                pass
            self._stream = None
        self._connector.close()


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return v.hex()
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    return str(v)


def _texts(values: dict) -> dict[str, str | None]:
    return {k: _text(v) for k, v in values.items()}
