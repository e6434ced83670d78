"""SQLite connector: declared types mapped to Arrow, tolerant of SQLite's dynamic typing.

SQLite lets any value sit in any column, so before a read one aggregate query
checks, per column, whether every selected value has the storage class its
declared type promises; a column that does not conform is read as text
instead of failing the read. Date and time columns are always kept as text in
bronze (SQLite has no date type; the text is the source's truth); ``discover``
reports the type their values look like.

Identifiers are double-quoted by ``q`` everywhere. Keys come from the file: the primary key,
else a unique index over NOT NULL columns. ``tables: ["*"]`` stands for ``list_tables()``:
the tables and views of the file (SQLite's own ``sqlite_*`` tables left out).

Example::

    from eai_ray.config import SQLiteSource
    src = SQLiteSource(kind="sqlite", name="app", path="app.db", tables=[{"name": "users"}])
    for batch in SQLiteConnector(src).read("users"):
        ...
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from eai_ray.config import DbTable, SQLiteSource
from eai_ray.errors import EaiError, SourceError, SourceNotFound, SourceUnavailable
from eai_ray.ingestion._db import TableResources, choose_key, listed, rebatch
from eai_ray.ingestion.base import ERROR_COLUMN, RAW_COLUMN, Batch, ColumnInfo, DiscoveredSchema, Partition

SAMPLE_ROWS = 10_000  # rows discover() samples to infer date/time types

# storage classes (typeof) each Arrow type accepts; NULL always conforms
_ACCEPTS = {"int64": ("integer",), "double": ("integer", "real"), "bool": ("integer",),
            "binary": ("blob",), "string": ("text",)}


def declared_type(decl: str) -> tuple[pa.DataType, str]:
    """Arrow type for a declared column type, following SQLite's affinity rules (section 3.1)."""
    d = decl.upper()
    if any(k in d for k in ("DATE", "TIME")):
        return pa.string(), "date/time"
    if "BOOL" in d:
        return pa.bool_(), "boolean"
    if "INT" in d:
        return pa.int64(), "INTEGER affinity"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return pa.string(), "TEXT affinity"
    if "BLOB" in d:
        return pa.binary(), "BLOB affinity"
    if any(k in d for k in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")):
        return pa.float64(), "REAL/NUMERIC affinity (stored as 8-byte floats or integers)"
    return pa.string(), "no declared type"


def q(name: str) -> str:
    """A double-quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


class SQLiteConnector(TableResources):
    """Connector for one SQLite database file (read-only)."""

    kind = "sqlite"

    def __init__(self, source: SQLiteSource) -> None:
        self.source = source
        self.name = source.name
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ Connector
    def check(self) -> None:
        """Open the file read-only and run ``SELECT 1``; unknown tables raise SourceNotFound."""
        self._execute("SELECT 1")
        for t in self.source.tables:
            if t.table and not t.is_wildcard:
                self._columns(t)

    def list_tables(self) -> list[str]:
        """Tables and views of the file, without SQLite's own, eai's own and ``exclude`` matches."""
        rows = self._execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                             "AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")
        return listed((r[0] for r in rows), self.source.exclude)

    def discover(self, resource: str) -> DiscoveredSchema:
        """Declared types mapped to Arrow; date/time columns report the type their values parse as."""
        table = self._table(resource)
        columns = self._columns(table)
        conform = self._conforming(table, [(n, declared_type(d)[0]) for n, d, _, _ in columns], sample=SAMPLE_ROWS)
        cols = []
        for name, decl, notnull, pk in columns:
            typ, why = declared_type(decl)
            info = ColumnInfo(name, typ, nullable=not notnull, confidence=conform[name],
                              evidence=f"declared {decl or '(none)'}: {why}", primary_key=pk > 0)
            if why == "date/time":
                info = self._infer_temporal(table, info)
            cols.append(info)
        key = list(table.primary_key) or self._key(table, columns)
        for c in cols:
            c.primary_key = c.name in key
        estimate = self._execute(f"SELECT count(*) FROM {self._relation(table)}")[0][0]
        return DiscoveredSchema(table.name, cols, key, estimate)

    def read(self, resource: str, *, checkpoint: dict[str, Any] | None = None,
             partition: Partition | None = None, batch_rows: int = 250_000) -> Iterator[Batch]:
        """Batches of ``batch_rows`` rows after ``checkpoint``; non-conforming columns come back as text."""
        table = self._table(resource)
        declared = [(n, declared_type(d)[0]) for n, d, _, _ in self._columns(table)]
        where, params = self._where(table, checkpoint)
        ok = self._conforming(table, declared, where=where, params=params)
        types = [(n, t if ok[n] == 1.0 else pa.string()) for n, t in declared]
        items = [q(n) if t != pa.string() else f"CAST({q(n)} AS TEXT) AS {q(n)}" for n, t in types]
        sql = f"SELECT {', '.join(items)} FROM {self._relation(table)}{where}"
        cursor = table.incremental.cursor if table.incremental else None
        if cursor:
            sql += f" ORDER BY {q(cursor)}"  # sorted: each batch's max cursor is a safe resume point
        schema = pa.schema([pa.field(n, t) for n, t in types])
        yield from rebatch(self._fetch(sql, params, schema, batch_rows), batch_rows, cursor)

    def close(self) -> None:
        """Close the database file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ internals
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            path = Path(self.source.path).expanduser()
            if not path.is_file():
                raise SourceNotFound(f"sqlite source '{self.name}': database file {path} does not exist",
                                     source=self.name, path=str(path))
            try:
                # read-only: a connector must never create or change the source
                self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                             check_same_thread=False)
                self._conn.text_factory = _text  # bad UTF-8 is flagged per value, not a failed table
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return self._conn

    def _execute(self, sql: str, params: list[Any] | tuple = (), resource: str | None = None) -> list[tuple]:
        try:
            return self._connect().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, resource) from None

    def _error(self, exc: sqlite3.Error, resource: str | None = None) -> EaiError:
        msg = f"sqlite source '{self.name}' ({self.source.path}): {exc}"
        text = str(exc).lower()
        if "no such table" in text or "unable to open" in text:
            return SourceNotFound(msg, source=self.name, resource=resource)
        if "locked" in text or "busy" in text:
            return SourceUnavailable(msg, source=self.name, resource=resource)
        return SourceError(msg, source=self.name, resource=resource)

    def _relation(self, table: DbTable) -> str:
        if table.query:
            return f"({table.query.strip().rstrip(';')}) AS _eai_q"
        assert table.table is not None  # DbTable's validator sets 'table' on every entry without a query
        return q(table.table)

    def _columns(self, table: DbTable) -> list[tuple[str, str, bool, int]]:
        """(name, declared type, not null, pk position) per column; SourceNotFound for a missing table."""
        if table.query:
            cur = self._connect().execute(f"SELECT * FROM {self._relation(table)} LIMIT 0")
            return [(d[0], "", False, 0) for d in cur.description]
        assert table.table is not None  # DbTable's validator sets 'table' on every entry without a query
        rows = self._execute(f"PRAGMA table_info({q(table.table)})", resource=table.name)
        if not rows:
            raise SourceNotFound(f"sqlite source '{self.name}': table {table.table} does not exist",
                                 source=self.name, resource=table.name)
        return [(r[1], r[2] or "", bool(r[3]), r[5]) for r in rows]

    def _key(self, table: DbTable, columns: list[tuple[str, str, bool, int]]) -> list[str]:
        """The primary key (in key order), else a unique index over NOT NULL columns; [] for queries and views."""
        if table.query:
            return []
        assert table.table is not None  # DbTable's validator sets 'table' on every entry without a query
        pk = [name for name, _, _, pos in sorted(columns, key=lambda c: c[3]) if pos > 0]
        if pk:
            return pk
        not_null = {name for name, _, notnull, _ in columns if notnull}
        candidates = []
        for _seq, index, unique, _origin, partial in self._execute(f"PRAGMA index_list({q(table.table)})"):
            if not unique or partial:
                continue
            cols = [r[2] for r in self._execute(f"PRAGMA index_info({q(index)})")]
            if cols and all(c is not None for c in cols):  # None: an expression, not a column
                candidates.append((index, False, all(c in not_null for c in cols), cols))
        return choose_key(candidates)[0]

    def _where(self, table: DbTable, checkpoint: dict[str, Any] | None) -> tuple[str, list[Any]]:
        inc = table.incremental
        last = (checkpoint or {}).get("cursor")
        if inc and last is not None:
            return f" WHERE {q(inc.cursor)} > ?", [last]
        if inc and inc.initial is not None:
            return f" WHERE {q(inc.cursor)} >= ?", [inc.initial]
        return "", []

    def _conforming(self, table: DbTable, columns: list[tuple[str, pa.DataType]], *, where: str = "",
                    params: list[Any] | None = None, sample: int | None = None) -> dict[str, float]:
        """Share of non-null values per column whose storage class fits its Arrow type (1.0 = all)."""
        checks = []
        for name, typ in columns:
            kinds = ", ".join(f"'{k}'" for k in _ACCEPTS.get(str(typ), ("text",)))
            bad = f"typeof({q(name)}) NOT IN ({kinds}, 'null')"
            if typ == pa.bool_():
                bad += f" OR {q(name)} NOT IN (0, 1)"
            checks.append(f"sum(CASE WHEN {bad} THEN 1 ELSE 0 END), count({q(name)})")
        rel = self._relation(table)
        source = f"(SELECT * FROM {rel}{where} LIMIT {sample})" if sample else f"{rel}{where}"
        row = self._execute(f"SELECT {', '.join(checks)} FROM {source}", params or [], table.name)[0]
        out = {}
        for i, (name, typ) in enumerate(columns):
            if str(typ) == "string":
                out[name] = 1.0  # anything can be read as text
                continue
            n_bad, total = row[2 * i] or 0, row[2 * i + 1] or 0
            out[name] = 1.0 if total == 0 else (total - n_bad) / total
        return out

    def _infer_temporal(self, table: DbTable, info: ColumnInfo) -> ColumnInfo:
        """Report date or timestamp when sampled text values parse as ISO 8601; bronze keeps the text."""
        rows = self._execute(f"SELECT {q(info.name)} FROM {self._relation(table)} "
                             f"WHERE {q(info.name)} IS NOT NULL LIMIT {SAMPLE_ROWS}", resource=table.name)
        values = [r[0] for r in rows]
        is_date = all(isinstance(v, str) and len(v) == 10 for v in values)
        parsed = sum(1 for v in values if _parses(v))
        info.type = pa.date32() if values and is_date else pa.timestamp("us")
        info.confidence = parsed / len(values) if values else 0.0
        info.evidence += (f"; {parsed}/{len(values)} sampled values parse as ISO 8601 "
                          f"{'dates' if is_date else 'timestamps'} (bronze keeps them as text)")
        return info

    def _fetch(self, sql: str, params: list[Any], schema: pa.Schema, batch_rows: int) -> Iterator[pa.Table]:
        cur = self._connect().cursor()
        text = [i for i, f in enumerate(schema) if pa.types.is_string(f.type)]
        try:
            cur.execute(sql, params)
            while rows := cur.fetchmany(batch_rows):
                cols = list(zip(*rows))
                flagged = _undecodable(cols, text, schema) if text else None
                table = pa.table([_array(c, f.type) for c, f in zip(cols, schema)], schema=schema)
                if flagged is not None:
                    raw, errors = flagged
                    table = table.append_column(RAW_COLUMN, pa.array(raw, pa.string()))
                    table = table.append_column(ERROR_COLUMN, pa.array(errors, pa.string()))
                yield table
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            cur.close()


class _Undecodable(bytes):
    """TEXT whose bytes are not UTF-8 (SQLite stores whatever it is given)."""


def _text(data: bytes) -> str | _Undecodable:
    """The connection's text factory: UTF-8, or the bytes themselves, marked, for the row to be flagged."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _Undecodable(data)


def _undecodable(cols: list[tuple], text: list[int], schema: pa.Schema):
    """(raw, errors) per row when a text value of the batch is not UTF-8, else None.

    Such a value becomes NULL; the row keeps its original bytes in ``_eai_raw`` (a JSON object
    ``{"column": "base64:..."}``) and ``_eai_error`` names the column, so silver quarantines it
    under ``type:<column>`` and bronze never holds a replacement character.
    """
    import base64

    bad_rows: dict[int, dict[str, str]] = {}
    for i in text:
        values = cols[i]
        if not any(type(v) is _Undecodable for v in values):
            continue
        fixed = list(values)
        for r, v in enumerate(values):
            if type(v) is _Undecodable:
                bad_rows.setdefault(r, {})[schema[i].name] = "base64:" + base64.b64encode(v).decode()
                fixed[r] = None
        cols[i] = tuple(fixed)
    if not bad_rows:
        return None
    n = len(cols[0])
    raw: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    for r, found in bad_rows.items():
        raw[r] = json.dumps(found, ensure_ascii=False)
        errors[r] = "; ".join(f"type:{c}: value is not valid UTF-8 text (its bytes are kept base64 in _eai_raw)"
                              for c in found)
    return raw, errors


def _array(values: tuple, typ: pa.DataType) -> pa.Array:
    if typ == pa.bool_():  # SQLite stores booleans as 0/1 integers
        return pa.array(values, pa.int64()).cast(typ)
    return pa.array(values, typ)


def _parses(v: Any) -> bool:
    try:
        dt.datetime.fromisoformat(v)
        return True
    except (TypeError, ValueError):
        return False
