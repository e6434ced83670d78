"""Re-running a pipeline never doubles silver: keys come from the source, unchanged reads change
nothing, keyless full reads replace silver, and case-colliding names stay distinct through gold."""
import sqlite3

import pyarrow.compute as pc
import pytest

from eai_ray.config import parse_pipeline
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.catalog import open_catalog

pytestmark = pytest.mark.integration


def make_db(path):
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE keyed (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);
        CREATE TABLE keyless (region TEXT, amount REAL);
    """)
    con.executemany("INSERT INTO keyed VALUES (?, ?, ?)", [(i, f"n{i}", i * 2) for i in range(1, 301)])
    con.executemany("INSERT INTO keyless VALUES (?, ?)", [(f"r{i % 7}", i * 1.5) for i in range(200)])
    con.commit()
    return con


def pipeline(tmp_path, db):
    return parse_pipeline({
        "name": "rerun", "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "sqlite", "name": "s", "path": str(db),
                     "tables": [{"name": "keyed"}, {"name": "keyless"}]}],
    })


def run(cfg):
    summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    return summary, {t.source: t for t in summary.tables}


def rows(cfg, name):
    return open_catalog(cfg).load_table(name).scan().to_arrow()


def test_rerun_of_an_unchanged_source_changes_nothing(tmp_path):
    con = make_db(tmp_path / "src.db")
    cfg = pipeline(tmp_path, tmp_path / "src.db")
    summary, first = run(cfg)
    assert summary.status == "ok", [t.error for t in summary.tables]
    assert first["s.keyed"].mode == "merge" and first["s.keyed"].inserted == 300  # key from the catalog
    assert first["s.keyless"].mode == "replace" and first["s.keyless"].inserted == 200
    assert all(t.reconciled for t in first.values())

    summary, second = run(cfg)
    for t in second.values():
        assert t.inserted == t.updated == t.deleted == 0, t
        assert t.bronze_rows == 0 and t.bronze_skipped == t.rows_read > 0
        assert t.reconciled
    assert rows(cfg, "silver.s_keyed").num_rows == 300
    assert rows(cfg, "silver.s_keyless").num_rows == 200
    assert rows(cfg, "bronze.s_keyed").num_rows == 300  # bronze did not re-append the same read

    # one changed row, one new row, one deleted keyless row
    con.execute("UPDATE keyed SET qty = -1 WHERE id = 7")
    con.execute("INSERT INTO keyed VALUES (301, 'new', 1)")
    con.execute("DELETE FROM keyless WHERE rowid = 1")
    con.commit()
    summary, third = run(cfg)
    k, kl = third["s.keyed"], third["s.keyless"]
    assert (k.inserted, k.updated, k.bronze_rows, k.bronze_skipped) == (1, 1, 2, 299)
    assert (kl.inserted, kl.deleted, kl.unchanged) == (0, 1, 199)
    assert k.reconciled and kl.reconciled
    silver = rows(cfg, "silver.s_keyed")
    assert silver.num_rows == 301
    assert silver.filter(pc.equal(silver["id"], 7))["qty"].to_pylist() == [-1]
    assert rows(cfg, "silver.s_keyless").num_rows == 199


def test_case_colliding_columns_stay_distinct_through_gold(tmp_path, pg_database):
    from tests.integration.cases_db import PG, pg_admin

    con = pg_admin(pg_database)
    with con.cursor() as cur:
        cur.execute('CREATE TABLE cased (id int PRIMARY KEY, "Total" float8, "total" float8)')
        cur.executemany("INSERT INTO cased VALUES (%s, %s, %s)", [(i, i * 10.0, i * 1.0) for i in range(1, 51)])
    con.close()
    cfg = parse_pipeline({
        "name": "cased", "state_dir": str(tmp_path / "state"),
        "sources": [{"kind": "postgres", "name": "p", "database": pg_database, **PG, "tables": [{"name": "cased"}]}],
        "gold": [{"name": "sums", "sql": 'SELECT SUM("Total") AS upper_sum, SUM(total__2) AS lower_sum '
                                         "FROM silver.p_cased"}],
    })
    summary, reps = run(cfg)
    assert summary.status == "ok", (summary.gold, [t.error for t in summary.tables])
    assert reps["p.cased"].renamed == {"total": "total__2"}
    silver = rows(cfg, "silver.p_cased")
    assert {"Total", "total__2", "id"} <= set(silver.column_names)
    gold = rows(cfg, "gold.sums").to_pylist()[0]
    assert gold["upper_sum"] == sum(i * 10.0 for i in range(1, 51))
    assert gold["lower_sum"] == sum(i * 1.0 for i in range(1, 51))
    # the folded name would bind to 'Total' in any SQL engine: refused, naming the stored columns
    from eai_ray.errors import SqlValidationError
    from eai_ray.processing.sql import validate_select

    schema = {"silver.p_cased": {f.name: str(f.type) for f in silver.schema}}
    with pytest.raises(SqlValidationError, match="total__2"):
        validate_select("SELECT SUM(total) FROM silver.p_cased", schema)


def test_whole_database_with_exclude_lands_every_table_and_view(tmp_path):
    db = tmp_path / "all.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
        CREATE TABLE b (x TEXT, y REAL);
        CREATE TABLE tmp_scratch (z TEXT);
        INSERT INTO a VALUES (1, 'one'), (2, 'two');
        INSERT INTO b VALUES ('p', 1.5), ('q', 2.5), ('q', 2.5);
        INSERT INTO tmp_scratch VALUES ('ignored');
        CREATE VIEW a_view AS SELECT id, upper(v) AS v FROM a;
    """)
    con.commit()
    cfg = parse_pipeline({"name": "all", "state_dir": str(tmp_path / "state"),
                          "sources": [{"kind": "sqlite", "name": "s", "path": str(db), "tables": ["*"],
                                       "exclude": ["tmp_*"]}]})
    summary, reps = run(cfg)
    assert summary.status == "ok", [t.error for t in summary.tables]
    assert set(reps) == {"s.a", "s.b", "s.a_view"}
    assert reps["s.a"].mode == "merge" and reps["s.b"].mode == "replace"
    assert rows(cfg, "silver.s_a_view").to_pylist() == [{"id": 1, "v": "ONE"}, {"id": 2, "v": "TWO"}]
    assert rows(cfg, "silver.s_b").num_rows == 3  # a keyless table keeps its repeated rows
    summary, again = run(cfg)
    assert all(t.inserted == 0 and t.bronze_rows == 0 and t.reconciled for t in again.values())


def test_text_that_is_not_utf8_is_quarantined_per_value_with_its_bytes(tmp_path):
    import base64
    import json

    db = tmp_path / "bytes.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, w TEXT)")
    con.execute("INSERT INTO t VALUES (1, 'ok', 'fine')")
    con.execute("INSERT INTO t VALUES (2, CAST(X'626164fffe' AS TEXT), 'other')")
    con.commit()
    cfg = parse_pipeline({"name": "bytes", "state_dir": str(tmp_path / "state"),
                          "sources": [{"kind": "sqlite", "name": "s", "path": str(db), "tables": ["t"]}]})
    summary, reps = run(cfg)
    rep = reps["s.t"]
    assert summary.status == "ok" and rep.inserted == 1 and rep.quarantine_reasons == {"type:v": 1}
    record = json.loads(rows(cfg, "quarantine.s_t").column("_eai_record")[0].as_py())
    assert record["id"] == 2 and record["w"] == "other"
    assert base64.b64decode(record["v"].removeprefix("base64:")) == b"bad\xff\xfe"
