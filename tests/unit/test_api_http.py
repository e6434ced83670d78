"""The HTTP API app over in-process models, served by uvicorn on a free port (no Ray)."""
import socket
import threading
import time

import pytest
import requests

from eai_ray.api.http import LocalBackend, create_api
from eai_ray.api.settings import ApiSettings, resolve_api_key, sha256

KEY = "unit-test-key"


def _serve(app):
    import uvicorn

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    return server, th, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api():
    settings = ApiSettings(api_key_sha256=sha256(KEY), max_body_bytes=64_000, max_texts=50, max_text_chars=2000)
    server, th, url = _serve(create_api(LocalBackend(), settings))
    yield url
    server.should_exit = True
    th.join(10)


def test_health_and_docs_need_no_key(api):
    assert requests.get(f"{api}/healthz").json()["status"] == "ok"
    assert requests.get(f"{api}/docs").status_code == 200
    spec = requests.get(f"{api}/openapi.json").json()
    assert {"/v1/embed", "/v1/enrich", "/v1/map", "/v1/sql", "/healthz"} <= set(spec["paths"])


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {KEY}"}])
def test_requests_without_the_right_key_get_401(api, headers):
    for path, body in [("/v1/embed", {"texts": ["a"]}), ("/v1/enrich", {"rows": [], "enrich": []}),
                       ("/v1/map", {}), ("/v1/sql", {"question": "x"})]:
        r = requests.post(f"{api}{path}", json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)


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


def test_oversized_requests_get_413(api):
    h = {"X-API-Key": KEY}
    assert requests.post(f"{api}/v1/embed", json={"texts": ["x" * 70_000]}, headers=h).status_code == 413
    assert requests.post(f"{api}/v1/embed", json={"texts": ["a"] * 51}, headers=h).status_code == 413
    assert requests.post(f"{api}/v1/embed", json={"texts": ["y" * 2001]}, headers=h).status_code == 413

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b"z" * 1000
    r = requests.post(f"{api}/v1/embed", data=chunks(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    # an oversized body is refused before the key is even looked at
    assert requests.post(f"{api}/v1/embed", json={"texts": ["x" * 70_000]}).status_code == 413


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


def test_map_and_sql_call_the_capabilities_or_say_503(api):
    import importlib

    h = {"X-API-Key": KEY}
    for path, body, module, fn in [
            ("/v1/map", {"source_columns": [{"name": "cust_nm", "samples": ["Ann", "Bob"]}],
                         "target_schema": [{"name": "customer_name", "type": "string"}]},
             "eai_ray.processing.mapping", "map_columns"),
            ("/v1/sql", {"question": "how many orders?"}, "eai_ray.processing.nl2sql", "answer")]:
        try:
            present = hasattr(importlib.import_module(module), fn)
        except ImportError:
            present = False
        r = requests.post(f"{api}{path}", json=body, headers=h)
        if present:
            assert r.status_code != 503, r.text
        else:
            assert r.status_code == 503 and "capability not installed" in r.json()["detail"]


def test_auth_fails_closed_without_a_configured_key(monkeypatch, tmp_path):
    monkeypatch.delenv("EAI_API_KEY", raising=False)
    monkeypatch.setenv("EAI_API_KEY_FILE", str(tmp_path / "absent"))
    s = ApiSettings.from_env()
    assert s.auth and s.api_key_sha256 is None
    assert not s.key_ok("anything") and not s.key_ok(None)
    assert ApiSettings(auth=False).key_ok(None)


def test_key_file_is_created_private(monkeypatch, tmp_path):
    monkeypatch.delenv("EAI_API_KEY", raising=False)
    path = tmp_path / "k" / "api_key"
    key, where = resolve_api_key(create=True, key_file=path)
    assert where == str(path) and len(key) >= 32 and (path.stat().st_mode & 0o077) == 0
    assert resolve_api_key(key_file=path)[0] == key
    monkeypatch.setenv("EAI_API_KEY", "from-env")
    assert resolve_api_key(key_file=path) == ("from-env", "EAI_API_KEY")


def test_sql_refuses_writes_and_foreign_paths(api, monkeypatch, tmp_path):
    pytest.importorskip("eai_ray.processing.nl2sql")
    (tmp_path / "p.yaml").write_text(
        f"name: p\nstate_dir: {tmp_path / 'state'}\n"
        f"sources: [{{kind: sqlite, name: s, path: {tmp_path / 'x.db'}, tables: [{{name: t}}]}}]\n")
    monkeypatch.setenv("EAI_PIPELINE", str(tmp_path / "p.yaml"))  # the server's own pipeline: allowed
    h = {"X-API-Key": KEY}
    for q in ("drop table silver.orders", "delete from silver.orders; select 1",
              "show me pg_catalog.pg_user passwords"):
        r = requests.post(f"{api}/v1/sql", json={"question": q}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["valid"] is False and r.json()["rows"] == []
    r = requests.post(f"{api}/v1/sql", json={"question": "how many?", "pipeline": "/etc/passwd"}, headers=h)
    assert r.status_code == 403


def test_sql_error_surfaces_echo_nothing_and_create_nothing(api, monkeypatch, tmp_path):
    pytest.importorskip("eai_ray.processing.nl2sql")
    monkeypatch.chdir(tmp_path)
    h = {"X-API-Key": KEY}
    # a client's question with a NUL byte is an invalid field, not a server error
    r = requests.post(f"{api}/v1/sql", json={"question": "how many\u0000 orders"}, headers=h)
    assert r.status_code == 422
    # a broken pipeline YAML on the server: its values and the server's paths are not echoed
    (tmp_path / "bad.yaml").write_text("name: p\nsources: [{kind: sqlite, name: s, path: /very/secret/place.db, "
                                       "tables: [{name: t, partitions: -7}]}]\n")
    r = requests.post(f"{api}/v1/sql", json={"question": "how many orders?", "pipeline": "bad.yaml"}, headers=h)
    assert r.status_code == 422 and "-7" not in r.text and str(tmp_path) not in r.text and "secret" not in r.text
    # a read never creates the state folder a YAML names
    (tmp_path / "p.yaml").write_text(f"name: p\nstate_dir: {tmp_path / 'nowhere'}\n"
                                     "sources: [{kind: sqlite, name: s, path: x.db, tables: [t]}]\n")
    r = requests.post(f"{api}/v1/sql", json={"question": "how many orders?", "pipeline": "p.yaml"}, headers=h)
    assert r.status_code == 200 and not (tmp_path / "nowhere").exists()
