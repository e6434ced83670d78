"""Journey 4 from the command line: a partner CSV with odd column names mapped onto silver.customers,
doubtful mappings queued for review, an approval remembered on the next run."""
import json

import pytest

from eai_ray.cli import main
from eai_ray.config import parse_pipeline
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner

pytestmark = pytest.mark.integration


def test_map_review_approve_remember(tmp_path, capsys):
    (tmp_path / "canon").mkdir()
    (tmp_path / "canon" / "customers.csv").write_text(
        "id,name,email,country\n1,Ann Lee,ann@example.com,DE\n2,Bo Chen,bo@example.com,FR\n3,Cy Diaz,cy@example.com,US\n")
    (tmp_path / "partner").mkdir()
    (tmp_path / "partner" / "export.csv").write_text(
        "Kdnr,CUST_NM,e_mail,land\n1001,Anna Schmidt,anna@example.de,DE\n1002,Luc Martin,luc@example.fr,FR\n"
        "1003,John Smith,john@example.com,US\n")
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: j4
state_dir: {tmp_path / 'state'}
sources:
  - kind: files
    name: canon
    path: {tmp_path / 'canon'}
    resources: [{{name: customers, pattern: "*.csv", primary_key: [id]}}]
  - kind: files
    name: partner
    path: {tmp_path / 'partner'}
    resources: [{{name: customers, pattern: "*.csv", primary_key: [Kdnr]}}]
silver:
  - name: customers
    source: canon.customers
    primary_key: [id]
""")
    PipelineRunner(parse_pipeline(__import__("yaml").safe_load(p.read_text()), file=str(p)),
                   executor=LocalExecutor(), run_id="r1").run(only=["canon"])
    args = ["map", "-p", str(p), "--source", "partner.customers", "--target", "silver.customers", "--json"]
    assert main(args) == 0
    first = {m["source"]: m for m in json.loads(capsys.readouterr().out)}
    assert first["e_mail"]["target"] == "email" and first["land"]["target"] == "country"
    assert all(0.0 <= m["confidence"] <= 1.0 and m["rationale"] for m in first.values())
    assert main(["review", "list", "-p", str(p), "--json"]) == 0
    pending = json.loads(capsys.readouterr().out)
    queued = {r["source_column"]: r for r in pending}
    assert set(queued) == {m for m, v in first.items() if v["status"] == "review"}
    kdnr = queued.get("Kdnr")  # a German customer number: no word of it says "id", a person decides
    assert kdnr is not None, f"Kdnr was not queued for review: {first['Kdnr']}"
    assert main(["review", "fix", str(kdnr["id"]), "id", "-p", str(p)]) == 0
    capsys.readouterr()
    assert main(args) == 0
    again = {m["source"]: m for m in json.loads(capsys.readouterr().out)}
    assert again["Kdnr"]["target"] == "id" and again["Kdnr"]["status"] == "learned"
    assert main(["review", "export", "silver.customers", "-p", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"]["source"] == "Kdnr"
