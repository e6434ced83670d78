"""`eai validate` finds, before any run, what a run would fail on."""
from eai_ray.config import parse_pipeline
from eai_ray.orchestration.validate import check_pipeline

BASE = {
    "name": "v",
    "sources": [{"kind": "postgres", "name": "pg", "host": "127.0.0.1", "database": "x", "user": "postgres",
                 "password": "${EAI_TEST_SURELY_UNSET_PW}", "tables": [{"name": "orders"}, {"name": "people"}]}],
    "silver": [{"name": "orders", "source": "pg.orders",
                "columns": {"id": {"type": "int64"}, "amount": {"type": "decimal(12,2)"}}},
               {"name": "people", "source": "pg.people"}],
}


def _cfg(gold):
    return parse_pipeline({**BASE, "gold": gold})


def test_an_unset_secret_and_an_unknown_gold_column_are_problems(monkeypatch):
    monkeypatch.delenv("EAI_TEST_SURELY_UNSET_PW", raising=False)
    report = check_pipeline(_cfg([{"name": "g", "sql": "SELECT SUM(amountt) AS s FROM silver.orders"}]))
    assert any(p.startswith("sources[0].password: environment variable EAI_TEST_SURELY_UNSET_PW is not set")
               for p in report.problems), report.problems
    assert any(p.startswith("gold[0] (g).sql:") and "amountt" in p for p in report.problems), report.problems


def test_a_correct_pipeline_has_no_problems_and_chains_gold_models(monkeypatch):
    monkeypatch.setenv("EAI_TEST_SURELY_UNSET_PW", "pw")
    report = check_pipeline(_cfg([
        {"name": "totals", "sql": "SELECT id, SUM(amount) AS total FROM silver.orders GROUP BY id"},
        {"name": "big", "sql": "SELECT id FROM gold.totals WHERE total > 10"},
        {"name": "bad", "sql": "SELECT nope FROM gold.totals"},
    ]))
    assert len(report.problems) == 1, report.problems  # only the model that reads a missing column
    assert report.problems[0].startswith("gold[2] (bad).sql:") and "nope" in report.problems[0]


def test_discovered_schemas_are_checked_from_the_lakehouse_or_noted(monkeypatch):
    monkeypatch.setenv("EAI_TEST_SURELY_UNSET_PW", "pw")
    cfg = _cfg([{"name": "p", "sql": "SELECT name FROM silver.people"}])
    report = check_pipeline(cfg)
    assert report.problems == [] and "not checked" in report.notes[0] and "silver.people" in report.notes[0]
    built = check_pipeline(cfg, lakehouse={"silver.people": {"id": "long", "full_name": "string"}})
    assert len(built.problems) == 1 and "name" in built.problems[0]
