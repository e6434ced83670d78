"""Bounded work per request on the real Serve app (issue 10, finding 1), on the test session's Ray.

A fixed number of concurrent /v1/map requests at the documented maximum size, each with a client
timeout, saturate the Mapper; /healthz and /v1/embed keep answering throughout, surplus map requests
get 503 without waiting for a slot, limit errors raised in the Mapper reach the client as 413, and a
map request whose client leaves stops its work in the Mapper. Latencies are printed, not asserted:
benchmarks/api_load.py measures them (p99 of /healthz and /v1/embed under this load).
"""
import concurrent.futures as cf
import random
import socket
import string
import time

import pytest
import requests

from eai_ray.api.settings import sha256
from eai_ray.processing.mapping.features import describe
from eai_ray.processing.mapping.limits import MapLimits, default_token_counter

pytestmark = pytest.mark.integration

KEY = "limits-test-key"
H = {"X-API-Key": KEY}
WORDS = ("order customer invoice parcel delivery refund payment shipping warehouse product price discount "
         "account balance supplier region nation market segment priority clerk quantity tax comment status").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_size_request(seed: int, limits: MapLimits = MapLimits()) -> dict:
    """max_columns columns per side with as many distinct samples as the embedding budget allows;
    every request's texts are new (the Mapper's memo must not make a load test cheap)."""
    rng = random.Random(seed)
    count = default_token_counter()
    for k in range(8, 0, -1):
        sides = [[{"name": f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{seed}_{side}{i}",
                   "samples": [f"{rng.choice(WORDS)}{rng.randint(0, 999)}" for _ in range(k)]}
                  for i in range(limits.max_columns)] for side in range(2)]
        texts = describe(sides[0]).texts() + describe(sides[1]).texts()
        if count(list(dict.fromkeys(texts))) <= limits.max_embed_tokens:
            return {"source_columns": sides[0], "target_schema": sides[1]}
    raise AssertionError("no request at the maximum fits the token budget")


@pytest.fixture(scope="module")
def app_url(ray_session):
    from ray import serve

    from eai_ray.processing.enrich import SERVE_APP
    from serve_deployments.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 120})
    serve.run(build_app({"api_key_sha256": sha256(KEY), "llm_backend": "none", "map_deadline_s": 60, "map_queue": 2,
                         # the session's Ray has 2 CPUs: the replicas share them
                         "embedder_cpus": 0.5, "llm_cpus": 0.25, "mapper_cpus": 0.5}),
              name=SERVE_APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    # first calls load what each replica loads lazily
    requests.post(f"{url}/v1/embed", json={"texts": ["warm up"]}, headers=H, timeout=120).raise_for_status()
    requests.post(f"{url}/v1/map", headers=H, timeout=120, json={
        "source_columns": [{"name": "cust_email", "samples": ["a@x.com"]}],
        "target_schema": [{"name": "email"}, {"name": "id"}]}).raise_for_status()
    yield url
    serve.shutdown()


def test_healthz_answers_while_map_is_saturated(app_url):
    n = 6  # one computing, two queued (map_queue), three refused at once
    bodies = [max_size_request(seed) for seed in range(n)]

    def post(body):
        t0 = time.perf_counter()
        r = requests.post(f"{app_url}/v1/map", json=body, headers=H, timeout=90)
        return r.status_code, time.perf_counter() - t0, r

    health, embed = [], []
    with cf.ThreadPoolExecutor(n) as pool:
        futs = [pool.submit(post, b) for b in bodies]
        while not all(f.done() for f in futs):
            t0 = time.perf_counter()
            assert requests.get(f"{app_url}/healthz", timeout=30).status_code == 200
            health.append(time.perf_counter() - t0)
            if len(health) % 10 == 0:
                t0 = time.perf_counter()
                requests.post(f"{app_url}/v1/embed", json={"texts": ["order date"]}, headers=H,
                              timeout=30).raise_for_status()
                embed.append(time.perf_counter() - t0)
            time.sleep(0.05)
        results = [f.result() for f in futs]
    codes = sorted(code for code, _, _ in results)
    print(f"map codes {codes}; map seconds {[round(s, 1) for c, s, _ in results if c == 200]}; "
          f"healthz max {max(health) * 1000:.0f} ms over {len(health)}; embed max {max(embed) * 1000:.0f} ms")
    assert codes.count(200) >= 1 and codes.count(503) >= 1 and set(codes) <= {200, 503}
    # refused at once: every 503 came back before the first mapping finished, none waited for a slot
    assert max(s for c, s, _ in results if c == 503) < min(s for c, s, _ in results if c == 200)
    busy = next(r for c, _, r in results if c == 503)
    assert busy.headers.get("Retry-After") == "1" and "busy" in busy.json()["detail"]
    ok = next(r for c, _, r in results if c == 200)
    assert len(ok.json()["mappings"]) == MapLimits().max_columns


def test_limits_checked_in_the_mapper_reach_the_client_as_413(app_url):
    rng = random.Random(1)
    noise = [{"name": f"col{i}", "samples": ["".join(rng.choice(string.ascii_letters) for _ in range(40))
                                             for _ in range(8)]} for i in range(60)]
    r = requests.post(f"{app_url}/v1/map", json={"source_columns": noise, "target_schema": noise}, headers=H,
                      timeout=60)
    assert r.status_code == 413, r.text
    assert "embedding tokens; the limit is 8000" in r.json()["detail"] and "EAI_MAP_MAX_EMBED_TOKENS" in r.text
    assert "Traceback" not in r.text
    cols = [{"name": f"c{i}"} for i in range(1500)]  # the 1,500 x 1,500 (59 s before)
    r = requests.post(f"{app_url}/v1/map", json={"source_columns": cols, "target_schema": cols}, headers=H, timeout=60)
    # refused before any work (tests/unit/test_mapping_limits.py shows no embedding is computed)
    assert r.status_code == 413 and "has 1500 columns; the limit is 256" in r.json()["detail"]


def test_a_map_request_whose_client_leaves_stops_in_the_mapper(app_url):
    # finding 1: the work went on after the client disconnected
    bodies = [max_size_request(100 + i) for i in range(3)]
    with cf.ThreadPoolExecutor(3) as pool:
        gone = list(pool.map(lambda b: _abandon(f"{app_url}/v1/map", b, after_s=1.5), bodies))
    assert all(gone)
    # three max-size requests were abandoned: had they run on, a small one would wait behind them
    t0 = time.perf_counter()
    r = requests.post(f"{app_url}/v1/map", headers=H, timeout=60, json={
        "source_columns": [{"name": "order_total", "samples": [10.5, 20.25]}],
        "target_schema": [{"name": "total_amount", "samples": [11.0]}, {"name": "customer"}]})
    took = time.perf_counter() - t0
    print(f"small map request after three abandoned max-size ones: {took:.2f} s")
    assert r.status_code == 200 and took < 6.0, (r.status_code, took)


def _abandon(url: str, body: dict, *, after_s: float) -> bool:
    """POST and hang up after `after_s` without reading the answer; True when no answer came first."""
    try:
        requests.post(url, json=body, headers=H, timeout=after_s)
    except requests.exceptions.ReadTimeout:
        return True
    return False
