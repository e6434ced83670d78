"""Database traps read through the connectors directly: every value lands, or is flagged per value.

A private PostgreSQL database holds, in the non-public schema ``sales data``, a table for each
trap (infinite, BC and year-10000 timestamps, ``time '24:00'``, timetz, interval, money,
char(n), names with ``%``/quotes/dots/reserved words/non-ASCII/case-colliding pairs, JSON null
vs missing keys, arrays with NULLs and a NULL array, keys from unique indexes only, a view, a
partitioned table, unconstrained numerics). The source lists no tables (``schema:`` alone means
``"*"``); each table is read with both engines and compared, column by column, with what
psycopg2 reads from the server. Smaller MariaDB and SQLite versions check quoting, keys, the
wildcard and MariaDB's zero dates and long TIMEs.
"""
from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from eai_ray.config import MySQLSource, PostgresSource, SQLiteSource, expand_tables
from eai_ray.errors import SourceNotFound
from tests.integration.cases_db import MY, PG, my_admin, private_pg_database, suffix

pytestmark = pytest.mark.integration

SCHEMA = "sales data"
ODD = ["a%b", 'q"uote', "back`tick", "sp ace", "dot.ted", "select", "order", "größe", "名前", "Total", "total"]

PG_DDL = """
CREATE SCHEMA "sales data";
SET search_path = "sales data";
CREATE TABLE times (id int PRIMARY KEY, ts timestamp, tz timestamptz NOT NULL, d date, tm time, ttz timetz,
                    iv interval);
INSERT INTO times VALUES
  (1, '2024-03-01 12:00:00.123456', '2024-03-01 12:00:00+02', '2024-03-01', '13:14:15.5', '12:00:00+05:30',
      '1 year 2 mons 3 days 04:05:06.5'),
  (2, 'infinity', '-infinity', 'infinity', '24:00:00', '00:00:00-08', '-3 days'),
  (3, '0044-03-15 BC', '0001-01-01 00:00:00+00 BC', '4713-01-01 BC', '00:00', NULL, '0'),
  (4, '10000-01-01 00:00:00', '294276-01-01 00:00:00+00', '10000-01-01', NULL, NULL, NULL),
  (5, '0001-01-01 00:00:00', '9999-12-31 23:59:59.999999+00', '9999-12-31', '23:59:59.999999', '23:59:59+14',
      '-1 year -2 mons +3 days -04:05:06'),
  (6, NULL, '2000-01-01 00:00:00+00', NULL, NULL, NULL, NULL);
CREATE TABLE money_char (id int PRIMARY KEY, m money, c char(5), vc varchar(5));
INSERT INTO money_char VALUES (1, '$1,234.56', 'ab', 'ab'), (2, '-$0.01', '', ''), (3, NULL, NULL, NULL),
  (4, '92233720368547758.07', 'abcde', 'abcde'), (5, '-92233720368547758.08', ' x', ' x  ');
CREATE TABLE "odd.names" (id int PRIMARY KEY, "a%b" text, "q""uote" int, "back`tick" text, "sp ace" text,
                          "dot.ted" text, "select" int, "order" text, "größe" numeric(8,2), "名前" text,
                          "Total" int, "total" int);
INSERT INTO "odd.names" VALUES
  (1, '100%', 1, 'b`t', 's p', 'd.t', 10, 'first', 1.5, '山田', 7, 70),
  (2, '%s %(x)s %%', 2, '``', '  ', '..', 20, 'second', -2.25, 'ünï', 8, 80),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb);
INSERT INTO docs VALUES
  (1, '{"a": null, "b": {"c": null}}', '{"a": null, "b": {"c": null}}'),
  (2, '{"b": {}}', '{"b": {}}'),
  (3, 'null', 'null'),
  (4, NULL, NULL),
  (5, '[1, null, {"k": [null]}]', '[1, null, {"k": [null]}]');
CREATE TABLE arrays (id int PRIMARY KEY, ints int[], texts text[], days date[]);
INSERT INTO arrays VALUES (1, '{1,NULL,3}', '{"a",NULL,"NULL","x y","q\\"t"}', '{2024-01-01,infinity}'),
  (2, NULL, NULL, NULL), (3, '{}', '{}', '{}'), (4, '{NULL}', '{NULL}', '{NULL}'), (5, '{{1,2},{3,4}}', '{""}', NULL);
CREATE TABLE uniq_only (code text NOT NULL UNIQUE, other text UNIQUE, val int);
INSERT INTO uniq_only VALUES ('a', 'x', 1), ('b', NULL, 2), ('c', NULL, 3);
CREATE TABLE uniq_nullable (code text UNIQUE, val int);
INSERT INTO uniq_nullable VALUES ('a', 1), (NULL, 2), (NULL, 3);
CREATE TABLE keyless (a int, b text);
INSERT INTO keyless VALUES (1, 'x'), (1, 'x'), (NULL, NULL);
CREATE VIEW recent_times AS SELECT id, ts, d FROM times WHERE id <= 4;
CREATE TABLE events (id int NOT NULL, at timestamptz NOT NULL, what text, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO events SELECT i, timestamptz '2023-06-01' + i * interval '1 day', 'e' || i FROM generate_series(1, 400) i;
CREATE TABLE nums (id int PRIMARY KEY, n numeric, huge numeric, n2 numeric(10,2), wide numeric(50,10));
INSERT INTO nums VALUES
  (1, 1.5, 1e40, 1.25, 12345.6789),
  (2, -12345678.123456, 1, 'NaN', NULL),
  (3, 'NaN', NULL, NULL, -0.0000000001),
  (4, NULL, 'NaN', 0, 0),
  (5, 'Infinity', -1e-5, -99999999.99, 99999999999999999999.5),
  (6, '-Infinity', 2, 3, 1);
CREATE TABLE public.elsewhere (id int PRIMARY KEY);
"""

TABLES = ["arrays", "docs", "events", "keyless", "money_char", "nums", "odd.names", "recent_times", "times",
          "uniq_nullable", "uniq_only"]


@pytest.fixture(scope="module")
def pg_traps():
    def setup(cur):
        cur.execute(PG_DDL)
        cur.execute("ANALYZE")

    with private_pg_database(setup) as name:
        yield name


def pg_source(db: str, **over) -> PostgresSource:
    return PostgresSource.model_validate({"kind": "postgres", "name": "traps", "database": db, "schema": SCHEMA,
                                          **PG, **over})


def pg_connector(db: str, engine: str = "connectorx", **over):
    from eai_ray.ingestion.postgres import PostgresConnector

    return PostgresConnector(pg_source(db, **over), engine=engine)


def read_all(conn, resource: str, **kw) -> pa.Table:
    tables = [b.table for b in conn.read(resource, **kw)]
    if not tables:
        return conn.discover(resource).arrow_schema().empty_table()
    return pa.concat_tables(tables)


def by_first(table: pa.Table) -> list[dict[str, Any]]:
    first = table.column_names[0]
    return sorted(table.to_pylist(), key=lambda r: (r[first] is None, r[first]))


# ---------------------------------------------------------------------- the server's view
def pg_server(db: str):
    import psycopg2

    return psycopg2.connect(dbname=db, options="-c TimeZone=UTC -c IntervalStyle=iso_8601 -c DateStyle=ISO,YMD",
                            **PG)


def pg_expected(db: str, table: str, schema: pa.Schema) -> tuple[list[dict], list[dict]]:
    """Per row (ordered by the first column): the values the connector must give, and the raw texts of
    the values it must flag. Written independently of the connector (isfinite/extract, not its guards)."""
    from psycopg2 import sql

    server = pg_server(db)
    with server.cursor() as cur:
        cur.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    (sql.Identifier(SCHEMA, table).as_string(server),))
        declared = dict(cur.fetchall())
        values, bad = [], []
        for name, decl in declared.items():
            c = sql.Identifier(name).as_string(server)
            typ = schema.field(name).type
            out_of_range = None
            if decl.startswith(("timestamp", "date")) and not decl.endswith("[]"):
                out_of_range = f"NOT (isfinite({c}) AND extract(year FROM {c}) BETWEEN 1 AND 9999)"
            elif decl.startswith("time without") and not decl.endswith("[]"):
                out_of_range = f"{c} = '24:00'"
            elif pa.types.is_decimal(typ) and decl.startswith("numeric"):
                out_of_range = f"scale({c}) IS NULL"  # NaN and +-Infinity
            if pa.types.is_string(typ) and not decl.startswith("character("):
                value = f"{c}::text"  # char(n) is compared as psycopg2 reads it: padded
            elif decl == "money":
                value = f"{c}::numeric"
            else:
                value = c
            if out_of_range:
                value = f"CASE WHEN {out_of_range} THEN NULL ELSE {value} END"
                bad.append((name, f"CASE WHEN {c} IS NOT NULL AND {out_of_range} THEN {c}::text END"))
            values.append(value)
        order = sql.Identifier(next(iter(declared))).as_string(server)
        rel = sql.Identifier(SCHEMA, table).as_string(server)
        cur.execute(f"SELECT {', '.join(values + [b for _, b in bad])} FROM {rel} ORDER BY {order} NULLS LAST")
        rows = cur.fetchall()
    server.close()
    names = list(declared)
    expected = [dict(zip(names, r[:len(names)])) for r in rows]
    raws = [{name: v for (name, _), v in zip(bad, r[len(names):]) if v is not None} for r in rows]
    return expected, raws


def plain(v: Any) -> Any:
    return bytes(v) if isinstance(v, memoryview) else v


# ---------------------------------------------------------------------- PostgreSQL
def test_pg_wildcard_lists_every_table_once(pg_traps):
    conn = pg_connector(pg_traps)
    src = conn.source
    assert [t.name for t in src.tables] == ["*"]  # schema: with no list = every table
    conn.check()  # a '*' entry is no table to look up
    names = conn.list_tables()
    assert names == TABLES  # the partitioned table once, by its parent; no public table
    expanded = expand_tables(src, names)
    assert [t.name for t in expanded.tables] == TABLES
    assert all(t.schema_ == SCHEMA and t.table == t.name for t in expanded.tables)
    assert conn.resources() == TABLES
    from eai_ray.ingestion.postgres import PostgresConnector

    assert PostgresConnector(expanded).resources() == TABLES
    excluded = pg_connector(pg_traps, exclude=["uniq_*", "*.names"])
    assert excluded.list_tables() == [t for t in TABLES if not t.startswith("uniq_") and t != "odd.names"]
    public = pg_connector(pg_traps, schema="public", tables=["*"])
    assert public.list_tables() == ["elsewhere"]
    for c in (conn, excluded, public):
        c.close()


def test_pg_keys_come_from_the_catalog(pg_traps):
    conn = pg_connector(pg_traps)
    keys = {t: conn.discover(t).primary_key for t in TABLES}
    conn.close()
    assert keys == {"arrays": ["id"], "docs": ["id"], "events": ["id", "at"], "keyless": [],
                    "money_char": ["id"], "nums": ["id"], "odd.names": ["id"], "recent_times": [],
                    "times": ["id"], "uniq_nullable": [], "uniq_only": ["code"]}


@pytest.mark.parametrize("table", TABLES)
def test_pg_every_value_lands_or_is_flagged(pg_traps, table):
    """Rows read = source rows; good values equal the server's; flagged rows carry the raw text and reason."""
    conn = pg_connector(pg_traps, engine="copy")
    schema = conn.discover(table)
    copy = read_all(conn, table)
    conn.close()
    cx_conn = pg_connector(pg_traps)
    cx = read_all(cx_conn, table)
    cx_conn.close()
    assert copy.schema == cx.schema == schema.arrow_schema()
    assert by_first(copy) == by_first(cx)  # both engines give the same values
    expected, raws = pg_expected(pg_traps, table, schema.arrow_schema())
    got = by_first(cx)
    assert len(got) == len(expected)  # landed + flagged = source rows
    for g, e, raw in zip(got, expected, raws):
        assert {k: plain(g[k]) for k in e} == {k: plain(v) for k, v in e.items()}, g
        if not raw:
            assert g.get("_eai_raw") is None and g.get("_eai_error") is None
            continue
        assert json.loads(g["_eai_raw"]) == raw
        reasons = g["_eai_error"].split("; ")
        assert [r.split(":")[1] for r in reasons] == list(raw)
        for r, (column, text) in zip(reasons, raw.items()):
            assert r.startswith(f"type:{column}: value '{text}' is outside the range of ")
            assert r.endswith("(on_out_of_range: quarantine)")
    has_guards = bool(schema.guarded)
    assert ("_eai_raw" in cx.column_names) == has_guards  # no meta columns where nothing can be out of range


def test_pg_trap_values_in_detail(pg_traps):
    conn = pg_connector(pg_traps)
    times = {r["id"]: r for r in read_all(conn, "times").to_pylist()}
    assert [times[i]["_eai_error"] is not None for i in range(1, 7)] == [False, True, True, True, False, False]
    assert json.loads(times[2]["_eai_raw"]) == {"ts": "infinity", "tz": "-infinity", "d": "infinity",
                                                "tm": "24:00:00"}
    assert json.loads(times[3]["_eai_raw"]) == {"ts": "0044-03-15 00:00:00 BC", "tz": "0001-01-01 00:00:00+00 BC",
                                                "d": "4713-01-01 BC"}
    assert times[1]["tm"].isoformat() == "13:14:15.500000" and times[1]["ttz"] == "12:00:00+05:30"
    assert times[1]["iv"] == "P1Y2M3DT4H5M6.5S" and times[2]["iv"] == "P-3D"
    assert str(times[5]["tz"]) == "9999-12-31 23:59:59.999999+00:00"
    schema = conn.discover("times")
    assert schema.arrow_schema().field("tm").type == pa.time64("us")
    money = {r["id"]: r for r in read_all(conn, "money_char").to_pylist()}
    assert money[1]["m"] == Decimal("1234.56") and money[4]["m"] == Decimal("92233720368547758.07")
    assert money[5]["m"] == Decimal("-92233720368547758.08")
    assert [money[i]["c"] for i in range(1, 6)] == ["ab   ", "     ", None, "abcde", " x   "]  # padding kept
    docs = {r["id"]: r for r in read_all(conn, "docs").to_pylist()}
    assert json.loads(docs[1]["jb"]) == {"a": None, "b": {"c": None}} and "a" not in json.loads(docs[2]["j"])
    assert docs[3]["j"] == "null" and docs[4]["j"] is None  # JSON null is not SQL NULL
    arrays = {r["id"]: r for r in read_all(conn, "arrays").to_pylist()}
    assert arrays[1]["ints"] == "{1,NULL,3}" and arrays[2]["ints"] is None and arrays[3]["ints"] == "{}"
    assert arrays[1]["texts"] == '{a,NULL,"NULL","x y","q\\"t"}'  # the NULL element and the text 'NULL' differ
    odd = {r["id"]: r for r in read_all(conn, "odd.names").to_pylist()}
    assert set(ODD) <= set(odd[1]) and odd[1]["Total"] == 7 and odd[1]["total"] == 70
    assert odd[2]["a%b"] == "%s %(x)s %%" and odd[1]["名前"] == "山田" and odd[1]["größe"] == Decimal("1.5")
    nums = conn.discover("nums")
    types = {c.name: c.type for c in nums.columns}
    assert types["n"] == pa.decimal128(38, 6) and types["n2"] == pa.decimal128(10, 2)
    assert types["wide"] == pa.decimal128(38, 10)  # numeric(50,10): measured, 21 + 10 digits fit
    assert types["huge"] == pa.string() and "huge" in nums.warnings and "41 integer digits" in nums.warnings["huge"]
    conn.close()


@pytest.mark.parametrize("policy", ["null", "clamp"])
def test_pg_on_out_of_range_null_and_clamp(pg_traps, policy):
    conn = pg_connector(pg_traps, on_out_of_range=policy)
    rows = {r["id"]: r for r in read_all(conn, "times").to_pylist()}
    nums = {r["id"]: r for r in read_all(conn, "nums").to_pylist()}
    assert all(r["_eai_error"] is None for r in [*rows.values(), *nums.values()])  # no quarantine
    assert json.loads(rows[2]["_eai_raw"])["ts"] == "infinity"  # the raw text is kept either way
    if policy == "null":
        assert rows[2]["ts"] is None and rows[3]["d"] is None and nums[5]["n"] is None
    else:
        assert str(rows[2]["ts"]) == "9999-12-31 23:59:59.999999" and str(rows[2]["tz"]) == "0001-01-01 00:00:00+00:00"
        assert str(rows[3]["d"]) == "0001-01-01" and str(rows[4]["d"]) == "9999-12-31"
        assert str(rows[2]["tm"]) == "23:59:59.999999"
        top = "9" * 32 + "." + "9" * 6  # decimal128(38,6)'s largest value
        assert nums[5]["n"] == Decimal(top) and nums[6]["n"] == Decimal("-" + top)
        assert nums[3]["n"] is None  # NaN is no point of the range: NULL
        assert not next(c for c in conn.discover("times").columns if c.name == "tz").nullable
    # a table's own setting wins over the source's
    table_wins = pg_connector(pg_traps, on_out_of_range=policy,
                              tables=[{"name": "times", "on_out_of_range": "quarantine"}])
    assert next(r for r in read_all(table_wins, "times").to_pylist() if r["id"] == 2)["_eai_error"]
    conn.close()
    table_wins.close()


def test_pg_partitions_agree_on_measured_types(pg_traps):
    conn = pg_connector(pg_traps, tables=[{"name": "nums", "schema": SCHEMA, "partitions": 3}])
    schema = conn.discover("nums")
    parts = conn.plan("nums", checkpoint=None, parallelism=2, batch_rows=10)
    assert len(parts) == 3
    fresh = pg_connector(pg_traps, tables=[{"name": "nums", "schema": SCHEMA, "partitions": 3}])
    tables = [read_all(fresh, "nums", partition=p) for p in parts]  # a new connector, as in a Ray task
    assert all(t.schema == schema.arrow_schema() for t in tables)
    assert sorted(i for t in tables for i in t.column("id").to_pylist()) == [1, 2, 3, 4, 5, 6]
    conn.close()
    fresh.close()


@pytest.mark.parametrize("engine", ["copy", "connectorx"])
def test_pg_percent_names_in_cursor_partition_and_values(pg_traps, engine):
    """'%' in a table, a cursor column and a value: WHERE, ORDER BY, min/max and COPY all format."""
    conn = pg_connector(pg_traps, engine=engine, tables=[
        {"name": "odd.names", "schema": SCHEMA, "incremental": {"cursor": "a%b"}, "partitions": 2}])
    parts = conn.plan("odd.names", checkpoint=None, parallelism=2, batch_rows=10)
    assert len(parts) == 2
    ids = [i for p in parts for i in read_all(conn, "odd.names", partition=p,
                                                  checkpoint={"cursor": "1"}).column("id").to_pylist()]
    assert ids == [1]  # '100%' > '1'; '%s %(x)s %%' sorts before it
    assert conn.plan("odd.names", checkpoint={"cursor": "1"}, parallelism=2, batch_rows=10) == []  # one row left
    conn.close()


def test_pg_partitioned_table_reads_once_through_its_parent(pg_traps):
    conn = pg_connector(pg_traps, tables=["events"])
    t = read_all(conn, "events")
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 400
    assert conn.discover("events").row_estimate == 400  # summed over the leaves
    conn.close()


def test_pg_incremental_cursor_with_out_of_range_values(pg_traps):
    conn = pg_connector(pg_traps, tables=[{"name": "times", "incremental": {"cursor": "tz"}}])
    t = read_all(conn, "times", batch_rows=2)
    assert sorted(t.column("id").to_pylist()) == [1, 2, 3, 4, 5, 6]
    conn.close()


def test_pg_errors_name_table_and_fix(pg_traps):
    conn = pg_connector(pg_traps, tables=["ghost"])
    with pytest.raises(SourceNotFound) as info:
        conn.check()
    assert '"sales data"."ghost"' in str(info.value) and "fix:" in str(info.value)
    with pytest.raises(SourceNotFound) as info:
        conn.discover("not_listed")
    assert "fix:" in str(info.value) and "ghost" in str(info.value)
    conn.close()
    typo = pg_connector(pg_traps, schema="sales_data")  # '*' over a schema that does not exist
    for call in (typo.check, typo.list_tables):
        with pytest.raises(SourceNotFound) as info:
            call()
        assert '"sales_data"' in str(info.value) and "sales data" in str(info.value)  # names the real ones
    typo.close()


# ---------------------------------------------------------------------- MariaDB
MY_ODD = [c for c in ODD if c != "total"]  # MariaDB column names ignore case: the pair cannot exist


@pytest.fixture(scope="module")
def my_traps():
    name = f"eai_test_{suffix()}"
    admin = my_admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn = my_admin(name)
    cols = ", ".join(f"`{c.replace('`', '``')}` VARCHAR(20)" for c in MY_ODD)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # lets the zero dates in
        cur.execute(f"CREATE TABLE `odd%names` (id INT PRIMARY KEY, {cols}) CHARACTER SET utf8mb4")
        for i in (1, 2):
            # the test's own statement goes through pymysql's formatting: its % must be doubled
            cur.execute(f"INSERT INTO `odd%%names` VALUES ({i}, " + ", ".join(["%s"] * len(MY_ODD)) + ")",
                        [f"{c}-{i}%" for c in MY_ODD])
        cur.execute("INSERT INTO `odd%names` (id) VALUES (3)")
        cur.execute("""CREATE TABLE dates (code VARCHAR(10) NOT NULL, d DATE, dt DATETIME(6), ts TIMESTAMP(6) NULL,
                       tm TIME(6), UNIQUE KEY uk (code), UNIQUE KEY nullable_uk (d))""")
        cur.execute("""INSERT INTO dates VALUES ('ok', '2024-03-01', '2024-03-01 12:00:00.5', '2024-03-01 12:00:00',
                       '12:34:56.5'), ('zero', '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '838:59:59'),
                       ('part', '2024-00-15', '2024-01-00 10:00:00', NULL, '-01:00:00'),
                       ('year0', '0000-01-01', '0000-06-01 00:00:00', NULL, '24:00:00'),
                       ('edge', '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', '23:59:59.999999')""")
        cur.execute("CREATE TABLE keyless (a INT, b VARCHAR(5))")
        cur.execute("INSERT INTO keyless VALUES (1, 'x'), (1, 'x')")
        cur.execute("CREATE VIEW v_dates AS SELECT code, d FROM dates")
    conn.close()
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


def my_connector(db: str, **over):
    from eai_ray.ingestion.mysql import MySQLConnector

    return MySQLConnector(MySQLSource.model_validate({"kind": "mariadb", "name": "my", "database": db,
                                                      "host": MY["host"], "port": MY["port"], "user": MY["user"],
                                                      "tables": ["*"], **over}))


def test_my_wildcard_keys_and_odd_names(my_traps):
    conn = my_connector(my_traps)
    conn.check()
    assert conn.list_tables() == ["dates", "keyless", "odd%names", "v_dates"]
    assert conn.resources() == ["dates", "keyless", "odd%names", "v_dates"]
    assert {t: conn.discover(t).primary_key for t in conn.list_tables()} == {
        "dates": ["code"], "keyless": [], "odd%names": ["id"], "v_dates": []}
    rows = by_first(read_all(conn, "odd%names"))
    admin = my_admin(my_traps)
    with admin.cursor() as cur:
        cur.execute("SELECT * FROM `odd%names` ORDER BY id")
        names = [d[0] for d in cur.description]
        expected = [dict(zip(names, r)) for r in cur.fetchall()]
    admin.close()
    assert rows == expected and set(MY_ODD) <= set(rows[0])
    expanded = expand_tables(conn.source, conn.list_tables())
    assert [t.schema_ for t in expanded.tables] == [my_traps] * 4
    conn.close()
    # '%' in the table, the cursor column and the values: no statement goes through pymysql's formatting
    pct = my_connector(my_traps, tables=[{"name": "odd%names", "incremental": {"cursor": "a%b"}, "partitions": 2}])
    parts = pct.plan("odd%names", checkpoint=None, parallelism=2, batch_rows=10)
    assert len(parts) == 2
    ids = [i for p in parts
           for i in read_all(pct, "odd%names", partition=p, checkpoint={"cursor": "a%b-1%"}).column("id").to_pylist()]
    assert ids == [2]
    assert pct.plan("odd%names", checkpoint={"cursor": "a%b-1%"}, parallelism=2, batch_rows=10) == []
    pct.close()


@pytest.mark.parametrize("policy", ["quarantine", "null", "clamp"])
def test_my_zero_dates_and_long_times(my_traps, policy):
    conn = my_connector(my_traps, on_out_of_range=policy)
    schema = conn.discover("dates")
    assert schema.arrow_schema().field("tm").type == pa.time64("us")
    rows = {r["code"]: r for r in read_all(conn, "dates").to_pylist()}
    assert len(rows) == 5  # every row lands; none fails the read
    assert rows["ok"]["_eai_raw"] is None and str(rows["ok"]["tm"]) == "12:34:56.500000"
    assert str(rows["edge"]["dt"]) == "9999-12-31 23:59:59.999999" and rows["edge"]["_eai_raw"] is None
    assert json.loads(rows["zero"]["_eai_raw"]) == {"d": "0000-00-00", "dt": "0000-00-00 00:00:00.000000",
                                                    "ts": "0000-00-00 00:00:00.000000", "tm": "838:59:59.000000"}
    assert json.loads(rows["part"]["_eai_raw"]) == {"d": "2024-00-15", "dt": "2024-01-00 10:00:00.000000",
                                                    "tm": "-01:00:00.000000"}
    if policy == "quarantine":
        assert rows["zero"]["_eai_error"].startswith("type:d: value '0000-00-00' is outside the range of date")
        assert "type:tm: value '24:00:00.000000'" in rows["year0"]["_eai_error"]
    else:
        assert all(r["_eai_error"] is None for r in rows.values())
    zeros = (rows["zero"]["d"], rows["zero"]["dt"], rows["zero"]["ts"], rows["part"]["d"])
    assert zeros == (None, None, None, None)  # a zero date is no day: NULL even when clamping
    if policy == "clamp":
        assert str(rows["year0"]["d"]) == "0001-01-01" and str(rows["zero"]["tm"]) == "23:59:59.999999"
        assert str(rows["part"]["tm"]) == "00:00:00"
    else:
        assert rows["year0"]["d"] is None and rows["zero"]["tm"] is None
    conn.close()


# ---------------------------------------------------------------------- SQLite
def test_sqlite_wildcard_keys_and_odd_names(tmp_path):
    from eai_ray.ingestion.sqlite import SQLiteConnector

    path = tmp_path / "odd.db"
    lite_odd = [c for c in ODD if c != "total"]  # SQLite column names ignore case too
    db = sqlite3.connect(path)
    quoted = ", ".join('"' + c.replace('"', '""') + '" TEXT' for c in lite_odd)
    db.execute(f'CREATE TABLE "odd%names" (id INTEGER PRIMARY KEY, {quoted})')
    db.executemany(f'INSERT INTO "odd%names" VALUES (?, {", ".join("?" * len(lite_odd))})',
                   [(i, *[f"{c}-{i}%" for c in lite_odd]) for i in (1, 2)])
    db.execute("CREATE TABLE uniq (code TEXT NOT NULL, other TEXT UNIQUE, v INT)")
    db.execute("CREATE UNIQUE INDEX uniq_code ON uniq (code)")
    db.execute("CREATE TABLE keyless (a INT)")
    db.execute('CREATE VIEW "v.odd" AS SELECT id, "a%b" FROM "odd%names"')
    db.commit()
    db.close()
    conn = SQLiteConnector(SQLiteSource(kind="sqlite", name="lite", path=str(path), tables=["*"],
                                        exclude=["keyless"]))
    conn.check()
    assert conn.list_tables() == ["odd%names", "uniq", "v.odd"]
    assert {t: conn.discover(t).primary_key for t in conn.list_tables()} == {
        "odd%names": ["id"], "uniq": ["code"], "v.odd": []}
    rows = read_all(conn, "odd%names").to_pylist()
    assert rows == [{"id": i, **{c: f"{c}-{i}%" for c in lite_odd}} for i in (1, 2)]
    assert read_all(conn, "v.odd").to_pylist() == [{"id": 1, "a%b": "a%b-1%"}, {"id": 2, "a%b": "a%b-2%"}]
    conn.close()


# ---------------------------------------------------------------------- the shared per-value step (no database)
def test_finish_batch_flags_nan_text_and_merges_it_into_the_raw_object():
    from eai_ray.ingestion._db import MetaPlan, finish_batch

    final = pa.schema([pa.field("d", pa.date32()), pa.field("n", pa.decimal128(5, 2)),
                       pa.field("_eai_raw", pa.string()), pa.field("_eai_error", pa.string())])
    wire = pa.record_batch([pa.array([None, 1, 2], pa.date32()), pa.array(["1.50", "NaN", "NaN"]),
                            pa.array([None, None, '{"d":"infinity"}'])], names=["d", "n", "_eai_raw"])
    targets = {"d": "date [0001-01-01, 9999-12-31]", "n": "decimal(5,2)"}
    out = finish_batch(wire, MetaPlan(targets, "quarantine", final, {1: pa.decimal128(5, 2)}),
                       lambda col, f: col.cast(f.type))
    assert out.schema == final
    assert out.column("n").to_pylist() == [Decimal("1.50"), None, None]
    assert out.column("_eai_raw").to_pylist() == [None, '{"n":"NaN"}', '{"d":"infinity","n":"NaN"}']
    errors = out.column("_eai_error").to_pylist()
    assert errors[0] is None and errors[1].startswith("type:n: value 'NaN' is outside the range of decimal(5,2)")
    assert [e.split(":")[1] for e in errors[2].split("; ")] == ["d", "n"]
    kept = finish_batch(wire, MetaPlan(targets, "null", final, {1: pa.decimal128(5, 2)}),
                        lambda col, f: col.cast(f.type))
    assert kept.column("_eai_error").null_count == 3 and kept.column("_eai_raw").null_count == 1


def test_choose_key_prefers_primary_then_smallest_not_null_unique():
    from eai_ray.ingestion._db import choose_key

    assert choose_key([("u", False, True, ["a"]), ("pk", True, True, ["id"])])[0] == ["id"]
    assert choose_key([("wide", False, True, ["a", "b"]), ("narrow", False, True, ["c"])])[0] == ["c"]
    assert choose_key([("nullable", False, False, ["a"])]) == (
        [], "no primary key or unique index over NOT NULL columns")
