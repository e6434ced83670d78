"""CDC with "*" and awkward names: the snapshot of a MariaDB table whose column names hold backticks,
`%` and spaces, read through a wildcard source, gives every row with its values."""
from __future__ import annotations

import pytest

from eai_ray.config import parse_pipeline
from eai_ray.ingestion.cdc.events import SnapshotChunk
from eai_ray.orchestration.cdc import build_source

pytestmark = pytest.mark.integration


def test_wildcard_mariadb_snapshot_quotes_every_name(private_mariadb, tmp_path):
    my = private_mariadb
    db = my.create_database("cdc_names")
    conn = my.connect(database=db)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE `odd``t` (id INT PRIMARY KEY, `a``b` VARCHAR(10), `pct%` INT, `sp ace` TEXT)")
        cur.execute("INSERT INTO `odd``t` VALUES (1, 'x`y', 5, 'a b'), (2, NULL, NULL, NULL)")
        cur.execute("CREATE TABLE tmp_skip (id INT PRIMARY KEY)")
    conn.close()
    cfg = parse_pipeline({"name": "names", "state_dir": str(tmp_path / "state"), "sources": [
        {"kind": "mariadb", "name": "my", "port": my.port, "user": "root", "database": db,
         "tables": ["*"], "exclude": ["tmp_*"], "cdc": {}}]})
    source = build_source(cfg, cfg.sources[0])
    assert [s.name for s in source.tables()] == ["odd`t"]
    source.prepare()
    chunks = [c for c in source.snapshot(["odd`t"]) if isinstance(c, SnapshotChunk)]
    source.close()
    rows = sorted((r for c in chunks for r in c.rows.to_pylist()), key=lambda r: r["id"])
    assert rows == [{"id": "1", "a`b": "x`y", "pct%": "5", "sp ace": "a b"},
                    {"id": "2", "a`b": None, "pct%": None, "sp ace": None}]


def test_an_entrys_own_schema_is_captured_not_the_sources_default(private_postgres, private_mariadb, tmp_path):
    """`schema:` on a table entry means that schema in CDC too (the batch connectors already read it),
    even when the source's default schema holds a table of the same name."""
    pg = private_postgres
    db = pg.create_database("cdc_entry_schema")
    conn = pg.connect(db)
    with conn.cursor() as cur:
        cur.execute("CREATE SCHEMA sales")
        cur.execute("CREATE TABLE public.orders (id int PRIMARY KEY, origin text)")
        cur.execute("CREATE TABLE sales.orders (id int PRIMARY KEY, origin text)")
        cur.execute("INSERT INTO public.orders VALUES (1, 'public'); INSERT INTO sales.orders VALUES (1, 'sales')")
    conn.close()
    cfg = parse_pipeline({"name": "entry_schema", "state_dir": str(tmp_path / "pg"), "sources": [
        {"kind": "postgres", "name": "pg", "port": pg.port, "user": "postgres", "database": db,
         "tables": [{"name": "orders", "table": "orders", "schema": "sales"}], "cdc": {}}]})
    source = build_source(cfg, cfg.sources[0])
    assert [s.source_table for s in source.tables()] == ["sales.orders"]
    source.close()

    my = private_mariadb
    home, other = my.create_database("cdc_home"), my.create_database("cdc_other")
    conn = my.connect(database=other)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO t VALUES (1, 'other')")
    conn.close()
    cfg = parse_pipeline({"name": "entry_db", "state_dir": str(tmp_path / "my"), "sources": [
        {"kind": "mariadb", "name": "my", "port": my.port, "user": "root", "database": home,
         "tables": [{"name": "t", "table": "t", "schema": other}], "cdc": {}}]})
    source = build_source(cfg, cfg.sources[0])
    assert [s.source_table for s in source.tables()] == [f"{other}.t"]
    source.close()
