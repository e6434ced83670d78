"""A decoder for PostgreSQL's ``pgoutput`` logical replication protocol (version 1).

Pure: bytes in, change events out; no connection, so every branch is unit-tested with
hand-built messages. Values stay PostgreSQL text (what the server sends), typed later by the
silver stage. Format: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
"""
from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, TxEnd, position

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
UNCHANGED = object()  # an unchanged TOASTed value: the server did not send it


@dataclass
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d default (key), f full, i index, n nothing
    columns: list[str]
    key_flags: list[bool]
    type_oids: list[int]
    version: int = 1

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class _Tx:
    final_lsn: int
    xid: int
    commit_time: dt.datetime
    index: int = 0


def _ts(micros: int) -> dt.datetime:
    return PG_EPOCH + dt.timedelta(microseconds=micros)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError(f"message ends after {len(self.buf)} bytes, needed {self.pos + size}")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out[0] if len(out) == 1 else out

    def string(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        s = self.buf[self.pos:end].decode()
        self.pos = end + 1
        return s

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError("value runs past the end of the message")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


@dataclass
class PgOutputDecoder:
    """Turns pgoutput messages into ChangeEvent / TxEnd / BadEvent.

    `tables` maps ``schema.table`` to the resource name; rows of other relations become
    BadEvents ("unknown table"). `keys` overrides the key columns of a resource.
    """
    tables: dict[str, str]
    keys: dict[str, list[str]] = field(default_factory=dict)
    relations: dict[int, Relation] = field(default_factory=dict)
    _tx: _Tx | None = None
    _versions: dict[str, int] = field(default_factory=dict)

    def decode(self, payload: bytes, wal_start: int = 0) -> list:
        try:
            return self._decode(payload, wal_start)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError, IndexError) as exc:
            pos = position(self._tx.final_lsn, self._tx.index + 1) if self._tx else position(wal_start, 0)
            if self._tx:
                self._tx.index += 1
            return [BadEvent(reason=f"undecodable pgoutput message: {type(exc).__name__}: {exc}",
                             raw=payload[:2000].hex(), position=pos)]

    def _decode(self, payload: bytes, wal_start: int) -> list:
        if not payload:
            raise ValueError("empty message")
        r = _Reader(payload)
        kind = chr(r.take("!B"))
        if kind == "B":
            final_lsn, ts, xid = r.take("!QqI")
            self._tx = _Tx(final_lsn, xid, _ts(ts))
            return []
        if kind == "C":
            _flags, commit_lsn, end_lsn, ts = r.take("!BQQq")
            tx = self._tx
            self._tx = None
            return [TxEnd(commit=commit_lsn, resume=f"{end_lsn:X}", tx_id=str(tx.xid if tx else ""),
                          commit_time=_ts(ts), events=tx.index if tx else 0)]
        if kind == "R":
            oid = r.take("!I")
            schema, name = r.string(), r.string()
            ident = chr(r.take("!B"))
            ncols = r.take("!H")
            cols, flags, types = [], [], []
            for _ in range(ncols):
                flags.append(bool(r.take("!B") & 1))
                cols.append(r.string())
                types.append(r.take("!I"))
                r.take("!i")
            qual = f"{schema}.{name}"
            old = self.relations.get(oid)
            version = self._versions.get(qual, 0)
            if old is None or old.columns != cols or old.type_oids != types:
                version += 1
                self._versions[qual] = version
            self.relations[oid] = Relation(oid, schema, name, ident, cols, flags, types, version)
            return []
        if kind in ("Y", "O", "M"):
            return []  # type, origin and logical messages carry no row change
        if kind in ("I", "U", "D", "T"):
            if self._tx is None:
                raise ValueError(f"'{kind}' message outside a transaction")
            return self._change(kind, r)
        raise ValueError(f"unknown message type {kind!r}")

    def _rel(self, oid: int) -> Relation:
        rel = self.relations.get(oid)
        if rel is None:
            raise ValueError(f"change for relation {oid} before its Relation message")
        return rel

    def _tuple(self, r: _Reader, rel: Relation) -> tuple[dict, tuple]:
        n = r.take("!H")
        if n > len(rel.columns):
            raise ValueError(f"tuple has {n} columns, relation {rel.qualified} has {len(rel.columns)}")
        vals: dict[str, str | None] = {}
        unchanged: list[str] = []
        for i in range(n):
            k = chr(r.take("!B"))
            col = rel.columns[i]
            if k == "n":
                vals[col] = None
            elif k == "u":
                vals[col] = None
                unchanged.append(col)
            elif k in ("t", "b"):
                size = r.take("!I")
                data = r.raw(size)
                vals[col] = data.decode() if k == "t" else data.hex()
            else:
                raise ValueError(f"unknown tuple value kind {k!r}")
        return vals, tuple(unchanged)

    def _key_cols(self, resource: str, rel: Relation) -> list[str]:
        if self.keys.get(resource):
            return self.keys[resource]
        return [c for c, k in zip(rel.columns, rel.key_flags) if k]

    def _next_pos(self) -> str:
        tx = self._tx
        assert tx is not None  # changes are decoded inside a transaction only (_decode checks)
        tx.index += 1
        return position(tx.final_lsn, tx.index)

    def _event(self, rel: Relation, op, before, after, unchanged=()) -> ChangeEvent | BadEvent:
        pos = self._next_pos()
        tx = self._tx
        assert tx is not None  # as in _next_pos
        resource = self.tables.get(rel.qualified)
        if resource is None:
            return BadEvent(reason=f"change for unknown table {rel.qualified} (not in the pipeline)",
                            raw=str(after or before), position=pos, table=rel.qualified)
        src = after if after is not None else before or {}
        key = {c: src.get(c) for c in self._key_cols(resource, rel)}
        return ChangeEvent(table=resource, op=op, position=pos, commit=tx.final_lsn,
                           tx_id=str(tx.xid), commit_time=tx.commit_time, key=key,
                           before=before, after=after, unchanged=unchanged, schema_version=rel.version)

    def _change(self, kind: str, r: _Reader) -> list:
        if kind == "T":
            nrels = r.take("!I")
            r.take("!B")
            out = []
            for _ in range(nrels):
                rel = self._rel(r.take("!I"))
                out.append(self._event(rel, "t", None, None))
            return out
        rel = self._rel(r.take("!I"))
        if kind == "I":
            tag = chr(r.take("!B"))
            if tag != "N":
                raise ValueError(f"insert without a new tuple (tag {tag!r})")
            after, _ = self._tuple(r, rel)
            return [self._event(rel, "c", None, after)]
        if kind == "U":
            tag = chr(r.take("!B"))
            before = None
            if tag in ("K", "O"):
                before, _ = self._tuple(r, rel)
                tag = chr(r.take("!B"))
            if tag != "N":
                raise ValueError(f"update without a new tuple (tag {tag!r})")
            after, unchanged = self._tuple(r, rel)
            if before is not None and unchanged:
                # REPLICA IDENTITY FULL sends the old values: fill unchanged TOAST from them
                for c in unchanged:
                    after[c] = before.get(c)
                unchanged = tuple(c for c in unchanged if before.get(c) is None)
            out = []
            if before is not None:
                resource = self.tables.get(rel.qualified)
                cols = self._key_cols(resource, rel) if resource else []
                if any(before.get(c) != after.get(c) for c in cols):
                    out.append(self._event(rel, "d", before, None))  # the key changed: the old key goes away
            out.append(self._event(rel, "u", before, after, unchanged))
            return out
        tag = chr(r.take("!B"))
        if tag not in ("K", "O"):
            raise ValueError(f"delete without an old tuple (tag {tag!r})")
        before, _ = self._tuple(r, rel)
        return [self._event(rel, "d", before, None)]

