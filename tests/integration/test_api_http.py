"""The HTTP API app over the real in-process models (embedding model, embedded LLM, schema-mapping
scorer), served by uvicorn on a free port (no Ray); moved from tests/unit/test_api_http.py, which
keeps what needs no model."""
import json

import pytest
import requests

from eai_ray.api.http import LocalBackend, create_api
from eai_ray.api.settings import ApiSettings
from tests.unit.test_api_http import KEY, SETTINGS, _serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api():
    server, th, url = _serve(create_api(LocalBackend(), ApiSettings(**SETTINGS)))
    yield url
    server.should_exit = True
    th.join(10)


def test_embed_with_the_key(api):
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        r = requests.post(f"{api}/v1/embed", json={"texts": ["order id", "customer"]}, headers=headers)
        assert r.status_code == 200
        body = r.json()
        assert body["dim"] == 384 and len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == 384
    import base64

    import numpy as np
    r = requests.post(f"{api}/v1/embed", json={"texts": ["order id", "customer"], "encoding_format": "base64"},
                      headers={"X-API-Key": KEY}).json()
    vecs = np.frombuffer(base64.b64decode(r["embeddings_base64"]), dtype="<f4").reshape(r["count"], r["dim"])
    assert np.allclose(vecs, np.asarray(body["embeddings"]), atol=1e-6) and r["embeddings"] is None


def test_a_json_body_without_its_content_type_is_read_as_json(api):
    """curl -d sends a form content type; the README's example must work as written."""
    body = json.dumps({"texts": ["order date"]})
    for ctype in (None, "application/x-www-form-urlencoded"):
        headers = {"X-API-Key": KEY, **({"Content-Type": ctype} if ctype else {})}
        r = requests.post(f"{api}/v1/embed", data=body, headers=headers)
        assert r.status_code == 200, (ctype, r.text)
        assert len(r.json()["embeddings"]) == 1
    r = requests.post(f"{api}/v1/embed", data=body, headers={"X-API-Key": KEY, "Content-Type": "text/csv"})
    assert r.status_code == 422  # a declared non-JSON body is still refused


def test_enrich_over_http(api):
    r = requests.post(f"{api}/v1/enrich", headers={"X-API-Key": KEY}, json={
        "rows": [{"id": 1, "t": "Where is my parcel? It has not arrived."}, {"id": 2, "t": None}],
        "enrich": [{"column": "t", "task": "classify",
                    "labels": {"shipping": "a question about a delivery", "praise": "a happy customer"}}]})
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert rows[0]["t_classify"] == "shipping" and rows[1]["t_classify"] is None
    bad = requests.post(f"{api}/v1/enrich", headers={"X-API-Key": KEY},
                        json={"rows": [{"a": "x"}], "enrich": [{"column": "a", "task": "classify"}]})
    assert bad.status_code == 422


def test_map_and_sql_call_the_capabilities(api):
    """Both capabilities ship with eai-ray: an import error must fail here, not read as "not installed"."""
    h = {"X-API-Key": KEY}
    r = requests.post(f"{api}/v1/map", headers=h, json={
        "source_columns": [{"name": "cust_nm", "samples": ["Ann", "Bob"]}],
        "target_schema": [{"name": "customer_name", "type": "string"}, {"name": "order_id", "type": "int64"}]})
    assert r.status_code == 200, r.text
    assert r.json()["mappings"][0]["target"] == "customer_name"
    r = requests.post(f"{api}/v1/sql", json={"question": "how many orders?"}, headers=h)
    assert r.status_code == 400 and "no pipeline" in r.json()["detail"], r.text  # reached the route's own check
