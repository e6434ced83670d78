"""PostgreSQL log-based CDC: a publication, a logical replication slot and pgoutput via psycopg2.

- ``prepare``: checks ``wal_level=logical``, that every table exists and has a key (primary key,
  or REPLICA IDENTITY FULL with ``primary_key`` in the YAML), creates the publication and adds
  missing tables to it.
- ``snapshot``: creates a slot with ``EXPORT_SNAPSHOT`` and reads the tables inside that exported
  snapshot (``SET TRANSACTION SNAPSHOT``): the rows are exactly the state at the slot's consistent
  point, and the slot streams every transaction that commits after it, so nothing is missed or
  doubled at the handoff. Tables added later (or re-snapshotted) use a TEMPORARY slot for their
  own consistent point while the main slot keeps its position.
- ``stream``: ``START_REPLICATION`` from the slot's confirmed position; the slot is only
  acknowledged (``flush_lsn``) after the consumer committed the data to Iceberg.
- A missing or invalidated slot raises ``SlotLost`` naming the tables it fed.

Example::

    src = PostgresCdcSource(pg_source_cfg, pipeline="shop")
    src.prepare()
    for chunk in src.snapshot(["orders"]): ...
    for item in src.stream(None): ...
"""
from __future__ import annotations

import io
import re
import select
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg2 import sql

from eai_ray.config import CdcConfig, PostgresSource
from eai_ray.errors import CdcSetupError, SlotLost, SourceUnavailable
from eai_ray.ingestion._db import first_line, scrub
from eai_ray.ingestion.cdc.events import Heartbeat, SnapshotChunk, TableSpec, position
from eai_ray.ingestion.cdc.pgoutput import PgOutputDecoder

_IDENT = re.compile(r"[^a-z0-9_]")


def default_name(pipeline: str, source: str) -> str:
    return _IDENT.sub("_", f"eai_{pipeline}_{source}".lower())[:63]


class PostgresCdcSource:
    """CdcSource for one PostgreSQL database."""

    kind = "postgres"
    has_slot_state = True  # the server keeps the stream position (the slot)

    def __init__(self, source: PostgresSource, *, pipeline: str, idle_seconds: float = 0.2) -> None:
        from eai_ray.ingestion.postgres import PostgresConnector

        self.source = source
        self.cfg: CdcConfig = source.cdc or CdcConfig()
        self.slot = self.cfg.slot or default_name(pipeline, source.name)
        self.publication = self.cfg.publication or default_name(pipeline, source.name)
        self.idle_seconds = idle_seconds
        self._connector = PostgresConnector(source)
        self._specs: list[TableSpec] | None = None
        self._repl: Any = None  # psycopg2 connections are untyped
        self._cur: Any = None
        self._password: str | None = None
        self.walsender_pid: int | None = None

    # ------------------------------------------------------------------ connections
    def _kwargs(self) -> dict[str, Any]:
        s = self.source
        self._password = s.password.resolve() if s.password else None
        kw = dict(host=s.host, port=s.port or 5432, dbname=s.database, user=s.user, password=self._password,
                  connect_timeout=max(1, round(s.connect_timeout)), application_name="eai-ray-cdc",
                  options="-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3")
        if s.sslmode:
            kw["sslmode"] = s.sslmode
        return {k: v for k, v in kw.items() if v is not None}

    def _error(self, exc: Exception) -> Exception:
        where = f"postgres CDC source '{self.source.name}'"
        return SourceUnavailable(f"{where}: {scrub(first_line(exc), self._password)}", source=self.source.name)

    def _connect(self, replication: bool = False):
        try:
            if replication:
                return psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                        **self._kwargs())
            conn = psycopg2.connect(**self._kwargs())
            conn.autocommit = True
            return conn
        except psycopg2.Error as exc:
            raise self._error(exc) from None

    # ------------------------------------------------------------------ setup
    def _qualified(self, table: str) -> tuple[str, str]:
        if "." in table:
            schema, name = table.split(".", 1)
            return schema, name
        return self.source.schema_, table

    def tables(self) -> list[TableSpec]:
        if self._specs is None:
            specs = []
            for t in self.source.tables:
                d = self._connector.discover(t.name)
                assert t.table is not None  # CDC reads tables; DbTable sets 'table' on every entry without a query
                # an entry's own `schema:` wins, as in the batch connector; else 'schema.table' or the source's
                schema, name = (t.schema_, t.table) if t.schema_ else self._qualified(t.table)
                specs.append(TableSpec(t.name, f"{schema}.{name}", list(t.primary_key or d.primary_key),
                                       {c.name: c.type for c in d.columns}))
            self._specs = specs
        return self._specs

    def refresh(self) -> list[TableSpec]:
        """Rediscover column types after a source schema change (a new Relation message)."""
        self._specs = None
        return self.tables()

    def prepare(self) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW wal_level")
                level = cur.fetchone()[0]
                if level != "logical":
                    raise CdcSetupError(
                        f"postgres CDC source '{self.source.name}': wal_level is '{level}'",
                        source=self.source.name, expected="wal_level=logical in postgresql.conf (then restart)")
                specs = self.tables()
                for spec in specs:
                    schema, name = spec.source_table.split(".", 1)
                    cur.execute("SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE n.nspname = %s AND c.relname = %s", (schema, name))
                    ident = cur.fetchone()[0]
                    if not spec.key:
                        raise CdcSetupError(
                            f"postgres CDC source '{self.source.name}': table {spec.source_table} has no primary key",
                            source=self.source.name, table=spec.source_table,
                            expected="a primary key, or REPLICA IDENTITY FULL plus primary_key: [...] in the YAML")
                    if ident == "n":
                        raise CdcSetupError(
                            f"postgres CDC source '{self.source.name}': table {spec.source_table} has REPLICA "
                            "IDENTITY NOTHING, so its updates and deletes cannot be captured",
                            source=self.source.name, table=spec.source_table,
                            expected="ALTER TABLE ... REPLICA IDENTITY DEFAULT (with a primary key) or FULL")
                cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,))
                idents = [sql.Identifier(*s.source_table.split(".", 1)) for s in specs]
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(self.publication), sql.SQL(", ").join(idents)))
                else:
                    cur.execute("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
                                (self.publication,))
                    have = {r[0] for r in cur.fetchall()}
                    missing = [sql.Identifier(*s.source_table.split(".", 1)) for s in specs
                               if s.source_table not in have]
                    if missing:
                        cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                            sql.Identifier(self.publication), sql.SQL(", ").join(missing)))
        except psycopg2.Error as exc:
            raise self._error(exc) from None
        finally:
            conn.close()

    def slot_status(self) -> str | None:
        """None when the slot does not exist, else its wal_status ('reserved', 'extended', 'lost'...)."""
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT coalesce(wal_status, 'reserved'), database = current_database(), database "
                            "FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
                row = cur.fetchone()
                if row and not row[1]:
                    raise CdcSetupError(
                        f"postgres CDC source '{self.source.name}': replication slot '{self.slot}' belongs to "
                        f"database '{row[2]}', not '{self.source.database}'", source=self.source.name,
                        slot=self.slot, expected="a distinct cdc.slot (slots are named per server, not per database)")
                return row[0] if row else None
        finally:
            conn.close()

    def drop_slot(self) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            "WHERE slot_name = %s AND NOT active", (self.slot,))
        finally:
            conn.close()

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, tables: list[str], *, new_main_slot: bool) -> Iterator[SnapshotChunk]:
        """Read `tables` as of a new slot's consistent point.

        With ``new_main_slot`` the slot created is the one streaming goes on from (first start, or
        the remedy of a lost slot); otherwise a TEMPORARY slot gives these tables their own
        consistent point while the main slot keeps its position.
        """
        specs = {s.name: s for s in self.tables()}
        repl = self._connect(replication=True)
        try:
            with repl.cursor() as rc:
                if new_main_slot:
                    self.drop_slot()
                temp = "" if new_main_slot else "TEMPORARY "
                name = self.slot if new_main_slot else f"{self.slot}_snap"[:63]
                slot = sql.Identifier(name).as_string(rc)  # quoted like every identifier we send
                rc.execute(f"CREATE_REPLICATION_SLOT {slot} {temp}LOGICAL pgoutput EXPORT_SNAPSHOT")
                _slot, consistent_point, snapshot_name, _plugin = rc.fetchone()
            cp = _lsn(consistent_point)
            snap = self._connect()
            snap.autocommit = False
            try:
                with snap.cursor() as cur:
                    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
                    for t in tables:
                        spec = specs[t]
                        cols = list(spec.types)
                        schema, rel = spec.source_table.split(".", 1)
                        q = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
                            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols),
                            sql.Identifier(schema, rel))
                        buf = io.BytesIO()
                        cur.copy_expert(q.as_string(snap), buf)
                        yield SnapshotChunk(t, _parse_text_csv(buf.getvalue(), cols), position(cp, 0))
                    snap.rollback()
            finally:
                snap.close()
        except psycopg2.Error as exc:
            raise self._error(exc) from None
        finally:
            repl.close()  # a TEMPORARY slot goes away with its connection

    # ------------------------------------------------------------------ stream
    def stream(self, resume: str | None = None) -> Iterator:
        """pgoutput changes from the slot's confirmed position (`resume` is kept by the server)."""
        specs = self.tables()
        decoder = PgOutputDecoder(tables={s.source_table: s.name for s in specs},
                                  keys={s.name: s.key for s in specs})
        status = self.slot_status()
        if status is None or status == "lost":
            raise SlotLost(f"postgres CDC source '{self.source.name}': replication slot '{self.slot}' "
                           f"{'does not exist' if status is None else 'was invalidated (WAL removed)'}; "
                           "re-snapshot its tables", source=self.source.name, slot=self.slot,
                           tables=[s.name for s in specs])
        self.close()
        self._repl = self._connect(replication=True)
        cur = self._repl.cursor()
        try:
            cur.start_replication(slot_name=self.slot, decode=False, start_lsn=0, status_interval=5,
                                  options={"proto_version": "1", "publication_names": self.publication})
        except psycopg2.errors.UndefinedObject:
            raise SlotLost(f"postgres CDC source '{self.source.name}': replication slot '{self.slot}' vanished",
                           source=self.source.name, slot=self.slot, tables=[s.name for s in specs]) from None
        except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
            if "invalidated" in str(exc) or "can no longer" in str(exc):
                raise SlotLost(f"postgres CDC source '{self.source.name}': slot '{self.slot}' was invalidated",
                               source=self.source.name, slot=self.slot, tables=[s.name for s in specs]) from None
            raise self._error(exc) from None  # e.g. "slot is active for PID ...": the old reader is ending
        except psycopg2.Error as exc:
            raise self._error(exc) from None
        self._cur = cur
        self.walsender_pid = self._repl.get_backend_pid()
        in_tx = False
        try:
            while True:
                msg = cur.read_message()
                if msg is None:
                    ready = select.select([cur], [], [], self.idle_seconds)[0]
                    if not ready:
                        if not in_tx and cur.wal_end:
                            yield Heartbeat(resume=f"{cur.wal_end:X}")
                        else:
                            yield None
                    continue
                payload = msg.payload
                kind = payload[:1]
                if kind == b"B":
                    in_tx = True
                elif kind == b"C":
                    in_tx = False
                yield from decoder.decode(payload, msg.data_start)
        except psycopg2.Error as exc:
            raise self._error(exc) from None

    def ack(self, resume: str) -> None:
        if self._cur is not None and not self._repl.closed:
            try:
                self._cur.send_feedback(flush_lsn=int(resume, 16), reply=True)
            except psycopg2.Error as exc:
                raise self._error(exc) from None

    def lag(self) -> dict[str, Any]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn() - confirmed_flush_lsn, confirmed_flush_lsn::text, "
                            "pg_current_wal_lsn() - restart_lsn, pg_current_wal_lsn()::text "
                            "FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
                row = cur.fetchone()
            if not row:
                return {"slot": self.slot, "exists": False}
            return {"slot": self.slot, "exists": True, "lag_bytes": int(row[0] or 0), "confirmed_flush_lsn": row[1],
                    "retained_wal_bytes": int(row[2] or 0), "current_wal_lsn": f"{_lsn(row[3]):X}"}
        finally:
            conn.close()

    def close(self) -> None:
        if self._repl is not None:
            try:
                self._repl.close()
            except psycopg2.Error:
                pass
        self._repl = self._cur = None
        self._connector.close()


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _parse_text_csv(data: bytes, cols: list[str]) -> pa.Table:
    if not data:
        return pa.table({c: pa.array([], pa.string()) for c in cols})
    opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in cols}, strings_can_be_null=True,
                                null_values=[""], quoted_strings_can_be_null=False)
    return pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(column_names=cols),
                          convert_options=opts)
