"""A planted secret, referenced from every field that can carry one, is used where it belongs (the
HTTP request) and found nowhere else: not in the config object as Ray ships it, nor in logs, the
metadata catalog, lineage, run summaries, Iceberg metadata or data files."""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle

from eai_ray.config import load_pipeline, resolvable_secrets
from eai_ray.ingestion.registry import connector_for
from eai_ray.orchestration.executor import LocalExecutor
from eai_ray.orchestration.runner import PipelineRunner
from eai_ray.storage.lineage import LineageGraph
from eai_ray.storage.metadata import MetadataStore
from tests.integration.cases_files_rest import LocalServer, Response

pytestmark = pytest.mark.integration


def test_a_planted_secret_reaches_only_the_request(tmp_path, monkeypatch, caplog):
    secret = "planted-" + uuid.uuid4().hex
    monkeypatch.setenv("EAI_TEST_PLANTED", secret)
    monkeypatch.setenv("EAI_TEST_PLANTED_DSN_PW", secret)

    def app(req):
        if req.headers.get("x-api-key") != secret or req.query.get("sig") != secret:
            return Response(401, {"error": "no"})
        return Response(200, {"data": [{"id": i, "v": f"row {i}"} for i in range(5)]})

    server = LocalServer(app)
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "a.csv").write_text("id,name\n1,x\n2,y\n")
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: planted
state_dir: {tmp_path / 'state'}
catalog:
  properties: {{client.secret-ish: "${{EAI_TEST_PLANTED}}"}}
sources:
  - kind: rest
    name: api
    base_url: {server.url}
    headers: {{X-Api-Key: "${{EAI_TEST_PLANTED}}"}}
    resources:
      - {{name: items, path: /items, records_path: data, primary_key: [id], params: {{sig: "${{EAI_TEST_PLANTED}}"}}}}
  - kind: files
    name: drop
    path: {tmp_path / 'drop'}
    storage_options: {{token: "${{EAI_TEST_PLANTED}}"}}
    resources:
      - {{name: a, pattern: "*.csv", primary_key: [id]}}
""")
    try:
        cfg = load_pipeline(p)
        shipped = cloudpickle.dumps(cfg)  # what Ray sends to an actor or task
        assert secret.encode() not in shipped
        assert "${EAI_TEST_PLANTED}" in cfg.source("api").headers["X-Api-Key"]
        # resolved only where it is used: the connector built in the actor or task
        assert connector_for(cfg.source("api")).source.headers["X-Api-Key"] == secret
        assert connector_for(cfg.source("drop")).source.storage_options["token"] == secret
        # the driver hands the values to its actors through the object store, keyed by reference
        assert resolvable_secrets(cfg.source("api")) == {"${EAI_TEST_PLANTED}": secret}
        with caplog.at_level(logging.DEBUG):
            summary = PipelineRunner(cfg, executor=LocalExecutor()).run()
    finally:
        server.stop()
    assert summary.status == "ok", summary.to_dict()
    assert {t.source: t.bronze_rows for t in summary.tables} == {"api.items": 5, "drop.a": 2}
    assert server.requests and all(r.headers.get("x-api-key") == secret for r in server.requests)

    store = MetadataStore.for_pipeline(cfg)
    texts = {
        "summary": json.dumps(summary.to_dict(), default=str),
        "logs": caplog.text,
        "runs": json.dumps(store.runs(), default=str),
        "lineage": json.dumps(LineageGraph.load(store).edges, default=str),
        "config after the run": repr(cfg.model_dump()),
    }
    for where, text in texts.items():
        assert secret not in text, where
    for f in Path(tmp_path / "state").rglob("*"):  # catalog, metadata DB, Iceberg metadata, data files
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
