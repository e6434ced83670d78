"""The AI application on Ray Serve (the test session's Ray): HTTP endpoints, auth, limits, batching,
the LLM deployment and the enricher's Ray Data stage through the deployments."""
import concurrent.futures as cf
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import requests
import yaml

from eai_ray.api.settings import sha256
from eai_ray.config import EnrichSpec

pytestmark = pytest.mark.integration

KEY = "integration-test-key"
GOLDEN = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "enrich_classify.yaml").read_text())


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def serve_url(ray_session):
    from ray import serve

    from eai_ray.processing.enrich import SERVE_APP
    from serve_deployments.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"api_key_sha256": sha256(KEY), "max_body_bytes": 200_000, "max_texts": 100,
                         "llm_backend": "local",
                         # one CPU for the replicas: the session's Ray has 2, and the Ray Data stage needs one
                         "embedder_cpus": 0.5, "llm_cpus": 0.25, "mapper_cpus": 0.25}),
              name=SERVE_APP, route_prefix="/", blocking=False)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()  # frees the replicas' CPUs for the rest of the session


@pytest.fixture(scope="module")
def embedder():
    from eai_ray.processing.models.embedder import Embedder
    return Embedder.load("cpu")


def test_health_docs_and_openapi(serve_url):
    assert requests.get(f"{serve_url}/healthz", timeout=10).json() == {"status": "ok", "auth": True,
                                                                         "backend": "serve"}
    assert requests.get(f"{serve_url}/docs", timeout=10).status_code == 200
    assert "/v1/embed" in requests.get(f"{serve_url}/openapi.json", timeout=10).json()["paths"]


def test_api_key_is_required(serve_url):
    body = {"texts": ["hello"]}
    assert requests.post(f"{serve_url}/v1/embed", json=body, timeout=10).status_code == 401
    assert requests.post(f"{serve_url}/v1/embed", json=body, headers={"X-API-Key": "nope"}, timeout=10).status_code == 401
    assert requests.post(f"{serve_url}/v1/sql", json={"question": "drop table x"}, timeout=10).status_code == 401
    ok = requests.post(f"{serve_url}/v1/embed", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert ok.status_code == 200


def test_oversized_requests_are_rejected(serve_url):
    h = {"X-API-Key": KEY}
    assert requests.post(f"{serve_url}/v1/embed", json={"texts": ["x" * 250_000]}, headers=h,
                         timeout=10).status_code == 413
    assert requests.post(f"{serve_url}/v1/embed", json={"texts": ["a"] * 101}, headers=h, timeout=10).status_code == 413


def test_embeddings_over_http_match_the_model_under_concurrency(serve_url, embedder):
    texts = [[f"client {c} sentence {i} about shipping and invoices" for i in range(8)] for c in range(16)]

    def call(batch):
        r = requests.post(f"{serve_url}/v1/embed", json={"texts": batch}, headers={"X-API-Key": KEY}, timeout=60)
        r.raise_for_status()
        return np.asarray(r.json()["embeddings"], dtype=np.float32)

    with cf.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, texts))
    for batch, vecs in zip(texts, got):  # dynamic batching must hand each caller its own rows
        assert np.allclose(vecs, embedder.encode(batch), atol=1e-4)


def test_enrich_over_http_with_token_counts(serve_url):
    ex = GOLDEN["examples"]
    r = requests.post(f"{serve_url}/v1/enrich", headers={"X-API-Key": KEY}, timeout=120, json={
        "rows": [{"id": i, "text": e["text"]} for i, e in enumerate(ex[:4])],
        "enrich": [{"column": "text", "task": "classify", "labels": GOLDEN["labels"]},
                   {"column": "text", "task": "summarize", "max_tokens": 24}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [row["text_classify"] for row in body["rows"]] == [e["label"] for e in ex[:4]]
    assert all(row["text_summarize"] for row in body["rows"])
    assert body["stats"]["llm_calls"] == 4 and body["stats"]["completion_tokens"] > 0


def test_map_route_calls_the_schema_mapper(serve_url):
    r = requests.post(f"{serve_url}/v1/map", headers={"X-API-Key": KEY}, timeout=120, json={
        "source_columns": [{"name": "cust_email", "samples": ["ann@x.com", "bob@y.org"]}],
        "target_schema": [{"name": "email", "type": "string"}, {"name": "order_id", "type": "int64"}]})
    assert r.status_code == 200, r.text  # a 503 here is a Mapper deployment that is not serving
    assert r.json()["mappings"][0]["target"] == "email"


def test_llm_deployment_through_its_handle(serve_url):
    from eai_ray.processing.enrich import ServeClient

    c = ServeClient().llm.complete("Name a colour.", max_tokens=6, timeout=30)
    assert c.text and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 6


def test_ray_data_enrich_stage_through_the_deployments(serve_url):
    from eai_ray.processing.enrich import enrich_with_ray

    ex = GOLDEN["examples"]
    table = pa.table({"id": list(range(len(ex))), "msg": [e["text"] for e in ex]})
    spec = EnrichSpec(column="msg", task="classify", labels=GOLDEN["labels"], output="label")
    out = enrich_with_ray(table, [spec], batch_size=3)  # auto: the app is running, so via Serve
    assert out.column("id").to_pylist() == list(range(len(ex)))
    assert out.column("label").to_pylist() == [e["label"] for e in ex]
