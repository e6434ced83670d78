"""CDC without a database: the pgoutput decoder on hand-built messages, the sink on a local catalog."""
from __future__ import annotations

import datetime as dt
import struct

import pyarrow as pa
import pytest
from pyiceberg.catalog import load_catalog

from eai_ray.config import ColumnSpec, SilverTable, parse_pipeline
from eai_ray.errors import ConfigError
from eai_ray.ingestion.cdc.events import BadEvent, ChangeEvent, SnapshotChunk, TableSpec, TxEnd, end_of, position
from eai_ray.ingestion.cdc.pgoutput import PgOutputDecoder
from eai_ray.orchestration.cdc_sink import CdcSink
from eai_ray.storage import tables

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------- pgoutput messages
def _s(text: str) -> bytes:
    return text.encode() + b"\0"


def relation(oid=16384, cols=(("id", True), ("name", False), ("big", False))) -> bytes:
    body = b"R" + struct.pack("!I", oid) + _s("public") + _s("items") + b"d" + struct.pack("!H", len(cols))
    for name, key in cols:
        body += struct.pack("!B", 1 if key else 0) + _s(name) + struct.pack("!Ii", 25, -1)
    return body


def tup(*vals) -> bytes:
    out = struct.pack("!H", len(vals))
    for v in vals:
        if v is None:
            out += b"n"
        elif v == "<u>":
            out += b"u"
        else:
            b = v.encode()
            out += b"t" + struct.pack("!I", len(b)) + b
    return out


def begin(lsn=0x100, xid=7) -> bytes:
    return b"B" + struct.pack("!QqI", lsn, 0, xid)


def commit(lsn=0x100, end=0x130) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, lsn, end, 0)


def test_decoder_insert_update_delete_truncate_toast():
    d = PgOutputDecoder(tables={"public.items": "items"})
    out = []
    for m in (relation(), begin(), b"I" + struct.pack("!I", 16384) + b"N" + tup("1", "a", "x" * 10),
              b"U" + struct.pack("!I", 16384) + b"N" + tup("1", "b", "<u>"),
              b"U" + struct.pack("!I", 16384) + b"K" + tup("1", None, None) + b"N" + tup("2", "b", "<u>"),
              b"D" + struct.pack("!I", 16384) + b"K" + tup("2", None, None),
              b"T" + struct.pack("!IBI", 1, 0, 16384), commit()):
        out += d.decode(m)
    ops = [(e.op, e.key) for e in out if isinstance(e, ChangeEvent)]
    assert ops == [("c", {"id": "1"}), ("u", {"id": "1"}), ("d", {"id": "1"}), ("u", {"id": "2"}),
                   ("d", {"id": "2"}), ("t", {"id": None})]
    assert out[1].unchanged == ("big",)
    positions = [e.position for e in out if isinstance(e, ChangeEvent)]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert isinstance(out[-1], TxEnd) and out[-1].resume == "130" and out[-1].events == 6


def test_decoder_bad_messages_become_bad_events_and_stream_goes_on():
    d = PgOutputDecoder(tables={"public.items": "items"})
    assert d.decode(relation()) == []
    d.decode(begin())
    bad = d.decode(b"Zgarbage")
    assert isinstance(bad[0], BadEvent) and "unknown message type" in bad[0].reason
    bad = d.decode(b"I" + struct.pack("!I", 999) + b"N" + tup("1"))
    assert isinstance(bad[0], BadEvent) and "relation 999" in bad[0].reason
    trunc = d.decode(b"I" + struct.pack("!I", 16384) + b"N" + struct.pack("!H", 1) + b"t" + struct.pack("!I", 50) + b"ab")
    assert isinstance(trunc[0], BadEvent)
    good = d.decode(b"I" + struct.pack("!I", 16384) + b"N" + tup("5", "e", None))
    assert isinstance(good[0], ChangeEvent) and good[0].after["id"] == "5"
    other = PgOutputDecoder(tables={})
    other.decode(relation())
    other.decode(begin())
    unknown = other.decode(b"I" + struct.pack("!I", 16384) + b"N" + tup("1", "a", None))
    assert isinstance(unknown[0], BadEvent) and "unknown table public.items" in unknown[0].reason


def test_decoder_schema_version_grows_on_column_change():
    d = PgOutputDecoder(tables={"public.items": "items"})
    d.decode(relation())
    d.decode(relation(cols=(("id", True), ("name", False), ("big", False), ("extra", False))))
    d.decode(begin())
    ev = d.decode(b"I" + struct.pack("!I", 16384) + b"N" + tup("1", "a", None, "z"))[0]
    assert ev.schema_version == 2 and ev.after["extra"] == "z"


# ---------------------------------------------------------------------- sink
@pytest.fixture
def catalog(tmp_path):
    cat = load_catalog("t", type="sql", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}",
                       init_catalog_tables="true")
    for ns in ("bronze", "silver", "quarantine"):
        cat.create_namespace(ns)
    return cat


SPEC = TableSpec("t", "public.t", ["id"], {"id": pa.int32(), "name": pa.string(), "qty": pa.int64()})


def ev(op, commit, idx, key, after=None, unchanged=()):
    return ChangeEvent("t", op, position(commit, idx), commit, str(commit), NOW, {"id": str(key)},
                       None if after is None else None, after, unchanged)


def _silver(catalog, name="silver.s_t"):
    return sorted(tables.read(tables.load(catalog, name)).select(["id", "name", "qty"]).to_pylist(),
                  key=lambda r: r["id"])


def test_sink_replay_after_crash_is_exactly_once(catalog):
    sink = CdcSink(catalog, source="s", now=lambda: NOW)
    sink.prepare([SPEC])
    sink.write_snapshot(SnapshotChunk("t", pa.table({"id": ["1", "2"], "name": ["a", ""], "qty": ["1", None]}),
                                      position(5, 0)))
    batch = [ev("c", 6, 1, 3, {"id": "3", "name": "x", "qty": "3"}),
             ev("u", 6, 2, 3, {"id": "3", "name": "y", "qty": "4"}),
             ev("d", 7, 1, 1), ev("c", 8, 1, 1, {"id": "1", "name": "again", "qty": "9"})]
    sink.write(batch, end=end_of(8), resume="80")
    # a restart replays the same transactions (the slot was not acknowledged yet)
    fresh = CdcSink(catalog, source="s", now=lambda: NOW)
    fresh.prepare([SPEC])
    stats = fresh.write(batch, end=end_of(8), resume="80")
    assert stats.skipped == 4 and stats.bronze_rows == 0
    assert _silver(catalog) == [{"id": 1, "name": "again", "qty": 9}, {"id": 2, "name": "", "qty": None},
                                {"id": 3, "name": "y", "qty": 4}]
    bronze = tables.read(tables.load(catalog, "bronze.s_t"))
    assert bronze.num_rows == 2 + 4
    assert tables.last_property(tables.load(catalog, "silver.s_t"), "eai.cdc_position") == end_of(8)
    assert fresh.resume_point()[1] == "80"


def _bronze_positions(catalog, name="bronze.s_t"):
    return tables.read(tables.load(catalog, name)).column("_eai_position").to_pylist()


def test_sink_two_writers_never_double_bronze(catalog):
    """A second writer of the same tables (a Ray actor that outlived its kill beside its restarted
    instance) has a stale cached position: each append is filtered against the table itself."""
    old, new = CdcSink(catalog, source="s", now=lambda: NOW), CdcSink(catalog, source="s", now=lambda: NOW)
    old.prepare([SPEC])
    new.prepare([SPEC])
    t6 = [ev("c", 6, 1, 1, {"id": "1", "name": "a", "qty": "1"})]
    t7 = [ev("u", 7, 1, 1, {"id": "1", "name": "b", "qty": "2"}), ev("c", 7, 2, 2, {"id": "2", "name": "c", "qty": "3"})]
    t8 = [ev("d", 8, 1, 2)]
    old.write(t6, end=end_of(6), resume="60")  # the old instance's cache: position 6
    new.write(t6 + t7, end=end_of(7), resume="70")  # the new instance goes further
    stats = old.write(t7 + t8, end=end_of(8), resume="80")  # the old one, still consuming, writes 7 again
    assert stats.bronze_rows == 1 and stats.skipped == 2
    pos = _bronze_positions(catalog)
    assert sorted(pos) == sorted({e.position for e in t6 + t7 + t8})
    assert _silver(catalog) == [{"id": 1, "name": "b", "qty": 2}]


def test_sink_commit_conflict_refilters_instead_of_appending_again(catalog):
    """The other writer commits between an append's table load and its commit: the retry asks the
    new snapshot what it holds (a plain retry appended the same rows on top of the other's)."""

    class Interleaved:  # runs `hook` once, right after the first load of bronze.s_t
        def __init__(self, cat, hook):
            self.cat, self.hook = cat, hook

        def load_table(self, name):
            tbl = self.cat.load_table(name)
            if name == "bronze.s_t" and self.hook is not None:
                hook, self.hook = self.hook, None
                hook()
            return tbl

        def __getattr__(self, attr):
            return getattr(self.cat, attr)

    t6 = [ev("c", 6, 1, 1, {"id": "1", "name": "a", "qty": "1"})]
    t7 = [ev("c", 7, 1, 2, {"id": "2", "name": "b", "qty": "2"})]
    other = CdcSink(catalog, source="s", now=lambda: NOW)
    other.prepare([SPEC])
    other.write(t6, end=end_of(6), resume="60")  # creates the tables
    cat = Interleaved(catalog, None)
    sink = CdcSink(cat, source="s", now=lambda: NOW)
    sink.prepare([SPEC])
    assert sink.resume_point()[1] == "60"  # positions read: the next load of bronze is the append's
    cat.hook = lambda: other.write(t7, end=end_of(7), resume="70")
    stats = sink.write(t6 + t7, end=end_of(7), resume="70")
    assert cat.hook is None and stats.bronze_rows == 0
    assert sorted(_bronze_positions(catalog)) == [t6[0].position, t7[0].position]


def test_sink_late_event_never_overwrites_newer(catalog):
    sink = CdcSink(catalog, source="s", now=lambda: NOW)
    sink.prepare([SPEC])
    sink.write([ev("c", 9, 1, 1, {"id": "1", "name": "new", "qty": "2"})], end=end_of(9), resume="90")
    sink._wm.clear()
    sink._wm["silver.s_t"] = position(0)  # pretend the watermark was lost: the sequence still protects
    sink._wm["bronze.s_t"] = end_of(9)
    sink.write([ev("u", 4, 1, 1, {"id": "1", "name": "old", "qty": "1"})], end=end_of(4), resume="40")
    assert _silver(catalog) == [{"id": 1, "name": "new", "qty": 2}]


def test_sink_toast_truncate_tombstone_quarantine_and_scd2(catalog):
    spec = SilverTable(name="s_t", source="s.t", primary_key=["id"],
                       columns={"id": ColumnSpec(type="int32"), "name": ColumnSpec(type="string"),
                                "qty": ColumnSpec(type="int32")})
    sink = CdcSink(catalog, source="s", silver={"t": spec}, deletes="tombstone", scd2=True, now=lambda: NOW)
    sink.prepare([SPEC])
    sink.write_snapshot(SnapshotChunk("t", pa.table({"id": ["1"], "name": ["long text"], "qty": ["1"]}),
                                      position(5, 0)))
    sink.write([ev("u", 6, 1, 1, {"id": "1", "name": None, "qty": "2"}, unchanged=("name",)),
                ev("c", 6, 2, 2, {"id": "2", "name": "b", "qty": "not a number"}),
                ev("c", 6, 3, 3, {"id": "3", "name": "c", "qty": "3"}),
                ev("d", 7, 1, 3)], end=end_of(7), resume="70")
    rows = tables.read(tables.load(catalog, "silver.s_t")).sort_by("id").to_pylist()
    assert [(r["id"], r["name"], r["qty"], r["_eai_deleted"]) for r in rows] == [
        (1, "long text", 2, False), (3, None, None, True)]
    q = tables.read(tables.load(catalog, "quarantine.s_t")).to_pylist()
    assert len(q) == 1 and "qty" in q[0]["_eai_reason"] and "not a valid int32" in q[0]["_eai_reason"]
    hist = tables.read(tables.load(catalog, "silver.s_t_history")).sort_by([("id", "ascending"),
                                                                            ("_eai_version", "ascending")])
    h = [(r["id"], r["qty"], r["_eai_current"]) for r in hist.to_pylist()]
    assert h == [(1, 1, False), (1, 2, True), (3, 3, False)]
    sink.write([ev("t", 8, 1, None)], end=end_of(8), resume="80")
    rows = tables.read(tables.load(catalog, "silver.s_t")).to_pylist()
    assert all(r["_eai_deleted"] for r in rows)


def test_sink_unknown_table_and_undecodable_go_to_rejects(catalog):
    sink = CdcSink(catalog, source="s", now=lambda: NOW)
    sink.prepare([SPEC])
    other = ChangeEvent("zzz", "c", position(6, 1), 6, "6", NOW, {"id": "1"}, None, {"id": "1"})
    sink.write([other, ev("c", 6, 2, 1, {"id": "1", "name": "a", "qty": "1"})],
               bad=[BadEvent("undecodable pgoutput message: boom", "5a", position(6, 3))], end=end_of(6), resume="60")
    rej = tables.read(tables.load(catalog, "quarantine.s_cdc")).to_pylist()
    assert sorted(r["_eai_reason"].split(":")[0] for r in rej) == ["event for unknown table zzz",
                                                                   "undecodable pgoutput message"]
    assert _silver(catalog) == [{"id": 1, "name": "a", "qty": 1}]


def test_cdc_config_block():
    base = {"name": "p", "sources": [{"kind": "postgres", "name": "pg", "database": "d", "tables": [{"name": "t"}],
                                      "cdc": {"flush_rows": 100, "deletes": "tombstone"}}]}
    cfg = parse_pipeline(base)
    assert cfg.sources[0].cdc.flush_rows == 100 and cfg.sources[0].cdc.deletes == "tombstone"
    base["sources"][0]["cdc"] = {"transport": "kafka"}
    with pytest.raises(ConfigError, match="kafka_bootstrap"):
        parse_pipeline(base)
    base["sources"][0]["cdc"] = {"flush_rowz": 1}
    with pytest.raises(ConfigError, match="flush_rowz"):
        parse_pipeline(base)
