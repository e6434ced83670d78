"""The HTTP API app served by uvicorn on a free port, without Ray and without models: authentication,
limits, refusals, deadlines and pools. The routes on the real in-process models are tested in
tests/integration/test_api_http.py."""
import concurrent.futures as cf
import json
import socket
import threading
import time

import pytest
import requests

from eai_ray.api.http import LocalBackend, create_api
from eai_ray.api.settings import ApiSettings, resolve_api_key, sha256
from tests.unit.fakes import FakeScorer

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


SETTINGS = dict(api_key_sha256=sha256(KEY), max_body_bytes=64_000, max_texts=50, max_text_chars=2000)


class NoLLMBackend(LocalBackend):
    """The in-process backend without an LLM: the unit tier starts none (a route that embeds would
    load the embedding model and fail here; those are tested in tests/integration/test_api_http.py)."""

    def llm(self):
        return None


@pytest.fixture(scope="module")
def api():
    server, th, url = _serve(create_api(NoLLMBackend(), ApiSettings(**SETTINGS)))
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


def test_a_capability_that_is_not_installed_says_503(api, monkeypatch):
    import eai_ray.api.http as http

    monkeypatch.setattr(http, "MAPPING_FN", ("eai_ray.processing.no_such_module", "map_columns"))
    monkeypatch.setattr(http, "NL2SQL_FN", ("eai_ray.processing.nl2sql", "no_such_function"))
    h = {"X-API-Key": KEY}
    r = requests.post(f"{api}/v1/map", headers=h, json={"source_columns": [{"name": "a"}],
                                                         "target_schema": [{"name": "b"}]})
    assert r.status_code == 503 and r.json()["detail"] == ("capability not installed: "
                                                           "eai_ray.processing.no_such_module.map_columns")
    r = requests.post(f"{api}/v1/sql", json={"question": "how many orders?"}, headers=h)
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


# --------------------------------------------------------------------------- bounded work per request (issue 10)
class SlowBackend:
    """No models: embeddings of random unit vectors, each encode call taking `delay` seconds."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay, self.calls = delay, 0

    def encode(self, texts):
        import numpy as np

        self.calls += 1
        time.sleep(self.delay)
        v = np.random.default_rng(len(texts)).standard_normal((len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def llm(self):
        return None

    def enrich_client(self):
        raise AssertionError("the limits refuse the request before any model is asked for")

    def health(self):
        return {"backend": "slow"}


@pytest.fixture
def slow_api(monkeypatch):
    """A server over a SlowBackend with the settings a test asks for: (backend, app, url) = slow_api(**settings).
    The mapper scores pairs with a fake scorer (the unit tier trains none)."""
    from eai_ray.processing.mapping.scorer import Scorer

    monkeypatch.setattr(Scorer, "default", classmethod(lambda cls, **kw: FakeScorer()))
    servers = []

    def start(delay: float = 0.3, **settings):
        backend = SlowBackend(delay)
        app = create_api(backend, ApiSettings(auth=False, **settings))
        server, th, url = _serve(app)
        servers.append((server, th))
        return backend, app, url
    yield start
    for server, th in servers:
        server.should_exit = True
        th.join(10)


def _cols(n: int, prefix: str) -> list[dict]:
    return [{"name": f"{prefix}_column_{i}", "samples": [str(i), f"v{i}"]} for i in range(n)]


def _wait_until(cond, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_map_limits_answer_413_naming_the_limit_and_its_setting(slow_api):
    backend, _, url = slow_api()
    r = requests.post(f"{url}/v1/map", json={"source_columns": _cols(257, "a"), "target_schema": _cols(2, "b")},
                      timeout=30)
    assert r.status_code == 413
    assert r.json()["detail"] == ("source_columns has 257 columns; the limit is 256 per side (max_columns) "
                                  "[server setting EAI_MAP_MAX_COLUMNS]")
    assert r.json()["error"]["got"] == "257"
    r = requests.post(f"{url}/v1/map", json={"source_columns": [{"name": "n" * 129}], "target_schema": _cols(2, "b")},
                      timeout=30)
    assert r.status_code == 413 and "129 characters" in r.json()["detail"] and "EAI_MAP_MAX_NAME_CHARS" in r.text
    r = requests.post(f"{url}/v1/map", json={"source_columns": [{"name": "a", "samples": [[1, 2]]}],
                                             "target_schema": _cols(2, "b")}, timeout=30)
    assert r.status_code == 422
    assert backend.calls == 0  # refused before any embedding


def test_enrich_limits_count_specs_times_rows_over_http(slow_api):
    # finding 2: 100 specs x 1,000 rows (30 KB) took 100 s
    _, _, url = slow_api()
    spec = {"column": "t", "task": "classify", "labels": ["late", "fine"]}
    r = requests.post(f"{url}/v1/enrich", json={"rows": [{"t": f"order {i} late"} for i in range(1000)],
                                                "enrich": [spec] * 100}, timeout=30)
    assert r.status_code == 413
    assert r.json()["detail"].startswith("100 specs x 1000 rows = 100000 cells; the limit is 2000 (max_cells)")
    assert "EAI_ENRICH_MAX_CELLS" in r.json()["detail"]
    labels = {f"label {i}": "x" * 100 for i in range(50)}
    r = requests.post(f"{url}/v1/enrich", json={"rows": [{"t": "late"}], "enrich": [
        {"column": "t", "task": "classify", "labels": labels}]}, timeout=30)
    assert r.status_code == 413 and "max_label_chars" in r.json()["detail"]


def test_sql_question_length_is_a_413_naming_its_limit(api):
    # finding 3: the question's length was unbounded (a fixed pydantic cap gave a bare 422)
    r = requests.post(f"{api}/v1/sql", json={"question": "how many orders " * 200}, headers={"X-API-Key": KEY})
    assert r.status_code == 413
    assert r.json()["detail"] == ("the question is 3200 characters long; the limit is 2000 (sql_max_question_chars) "
                                  "[server setting EAI_SQL_MAX_QUESTION_CHARS]")


def test_a_request_past_its_deadline_gets_504_and_its_work_stops(slow_api):
    backend, app, url = slow_api(delay=0.4, map_deadline_s=1.0)
    r = requests.post(f"{url}/v1/map", json={"source_columns": _cols(250, "a"), "target_schema": _cols(250, "b")},
                      timeout=30)
    assert r.status_code == 504, r.text
    assert r.json()["detail"] == ("/v1/map did not finish within 1 s (server setting EAI_MAP_DEADLINE_S); "
                                  "its work was stopped")
    # the worker stops at its next checkpoint: at most the embedding chunk in flight finishes. A pool
    # slot is freed when the work has really ended, so no embedding call can follow.
    assert _wait_until(lambda: app.state.pools["map"].admitted == 0, 10.0)
    assert backend.calls < 8  # 4 chunks per side had it run to the end


def test_a_client_that_goes_away_stops_its_work(slow_api):
    backend, app, url = slow_api(delay=0.4, map_deadline_s=60.0)
    body = json.dumps({"source_columns": _cols(250, "a"), "target_schema": _cols(250, "b")}).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/map HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert _wait_until(lambda: backend.calls >= 1, 5.0)
    # gone after its first embedding call: the work stops at its next checkpoint, which frees the
    # pool slot (a slot is freed when the work has really ended, so no embedding call can follow)
    assert _wait_until(lambda: app.state.pools["map"].admitted == 0, 10.0)
    assert backend.calls < 8


def test_a_full_pool_answers_503_at_once_and_healthz_stays_fast(slow_api):
    # finding 1: 41 requests of 40 KB made /healthz stop answering for 15 s
    backend, app, url = slow_api(delay=0.25, map_concurrency=1, map_queue=1, map_deadline_s=30.0)
    body = {"source_columns": _cols(130, "a"), "target_schema": _cols(130, "b")}  # 2 embedding chunks per side
    with cf.ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(requests.post, f"{url}/v1/map", json=body, timeout=60) for _ in range(4)]
        assert _wait_until(lambda: app.state.pools["map"].admitted == 2, 10.0)
        answered = 0
        while not all(f.done() for f in futs):  # /healthz answers while the pool is full
            assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
            answered += 1
        codes = sorted(f.result().status_code for f in futs)
    assert codes == [200, 200, 503, 503] and answered, (codes, answered)
    busy = next(f.result() for f in futs if f.result().status_code == 503)
    assert busy.headers["Retry-After"] == "1" and "/v1/map is busy" in busy.json()["detail"]


def test_limits_deadlines_and_pools_come_from_the_environment(monkeypatch):
    from eai_ray.errors import ConfigError

    monkeypatch.setenv("EAI_MAP_MAX_COLUMNS", "128")
    monkeypatch.setenv("EAI_ENRICH_MAX_CELLS", "500")
    monkeypatch.setenv("EAI_SQL_DEADLINE_S", "2.5")
    s = ApiSettings.from_env(auth=False, map_queue=7)
    assert s.map_limits().max_columns == 128 and s.enrich_limits().max_cells == 500
    assert s.sql_deadline_s == 2.5 and s.map_queue == 7
    assert ApiSettings.env_name("map_max_embed_tokens") == "EAI_MAP_MAX_EMBED_TOKENS"
    monkeypatch.setenv("EAI_MAP_MAX_COLUMNS", "many")
    with pytest.raises(ConfigError, match="'EAI_MAP_MAX_COLUMNS': input should be a valid integer"):
        ApiSettings.from_env(auth=False)
