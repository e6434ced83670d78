"""api_load: p99 latency of the cheap routes while /v1/map is flooded at its documented maximum size.

ours:     p99 of `GET /healthz` and of `POST /v1/embed` (8 short sentences) on the eai Serve app while
          `--clients` clients send `/v1/map` requests at the maximum size (256 columns per side, the
          embedding-token budget filled; new texts in every request), each sending the same request
          again after Retry-After when it gets 503.
baseline: the same probes on the same app with no /v1/map traffic.
Phases alternate (idle, load, idle, load...) so a shared machine's noise hits both alike; latencies
are pooled per phase kind. Lower is better here: the RESULT line carries the route whose p99 grew
the most, with ratio = p99 under load / p99 idle (target: at most 3).

    .venv/bin/python benchmarks/api_load.py [--clients 8] [--seconds 15] [--rounds 2]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import result_line, say  # noqa: E402

KEY = "bench-" + os.urandom(8).hex()
H = {"X-API-Key": KEY, "Content-Type": "application/json"}
WORDS = ("order customer invoice parcel delivery refund payment shipping warehouse product price discount "
         "account balance supplier region nation market segment priority clerk quantity tax comment status").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_size_body(seed: int, limits) -> bytes:
    """A /v1/map request at the documented maximum: max_columns per side, as many distinct samples per
    column as the embedding-token budget allows; names and samples new to the Mapper's memo."""
    from eai_ray.processing.mapping.features import describe
    from eai_ray.processing.mapping.limits import default_token_counter

    rng = random.Random(seed)
    count = default_token_counter()
    for k in range(8, 0, -1):
        sides = [[{"name": f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{seed}_{side}{i}",
                   "samples": [f"{rng.choice(WORDS)}{rng.randint(0, 999)}" for _ in range(k)]}
                  for i in range(limits.max_columns)] for side in range(2)]
        texts = describe(sides[0]).texts() + describe(sides[1]).texts()
        tokens = count(list(dict.fromkeys(texts)))
        if tokens <= limits.max_embed_tokens:
            return json.dumps({"source_columns": sides[0], "target_schema": sides[1]}).encode()
    raise SystemExit("no request at the maximum fits the token budget")


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))] if xs else float("nan")


class Probe(threading.Thread):
    """One route, one connection, one request every `period` seconds; latencies in ms."""

    def __init__(self, name: str, send, period: float) -> None:
        super().__init__(daemon=True)
        self.name, self.send, self.period = name, send, period
        self.samples: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = self.send()
            except Exception:  # noqa: BLE001 - a timeout is a result too: count it as the timeout
                ok = False
            dt = (time.perf_counter() - t0) * 1000
            self.samples.append(dt)
            self.errors += not ok
            self.stop.wait(max(0.0, self.period - dt / 1000))


def run_phase(url: str, seconds: float, *, load: bool, clients: int, bodies) -> dict:
    import requests

    hs, es = requests.Session(), requests.Session()
    emb = json.dumps({"texts": [f"probe sentence {i} about an order and its invoice" for i in range(8)]}).encode()
    probes = [Probe("healthz", lambda: hs.get(f"{url}/healthz", timeout=10).status_code == 200, 0.05),
              Probe("embed", lambda: es.post(f"{url}/v1/embed", data=emb, headers=H, timeout=10).status_code == 200,
                    0.1)]
    outcomes: dict[int, int] = {}
    map_s: list[float] = []
    until = time.monotonic() + seconds
    lock = threading.Lock()

    def flood() -> None:
        sess = requests.Session()
        body = next(bodies)
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                r = sess.post(f"{url}/v1/map", data=body, headers=H, timeout=90)
                code = r.status_code
            except requests.RequestException:
                code = -1
            with lock:
                outcomes[code] = outcomes.get(code, 0) + 1
                if code == 200:
                    map_s.append(time.perf_counter() - t0)
            if code == 503:  # busy: as a client should, the same request again after Retry-After
                time.sleep(float(r.headers.get("Retry-After", 1)))
            else:
                body = next(bodies)

    for p in probes:
        p.start()
    if load:
        with cf.ThreadPoolExecutor(clients) as pool:
            for f in [pool.submit(flood) for _ in range(clients)]:
                f.result()
    else:
        time.sleep(seconds)
    for p in probes:
        p.stop.set()
        p.join()
    return {"healthz": probes[0].samples, "embed": probes[1].samples,
            "errors": {p.name: p.errors for p in probes}, "map": outcomes, "map_s": map_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    ap.add_argument("--rounds", type=int, default=2, help="idle/load phase pairs")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = os.cpu_count() or 1

    import ray
    import requests
    from ray import serve

    from eai_ray.api.settings import ApiSettings, sha256
    from serve_deployments.app import build_app

    limits = ApiSettings(auth=False).map_limits()
    say(f"api_load: {args.clients} /v1/map clients at {limits.max_columns} columns per side and "
        f"{limits.max_embed_tokens} embedding tokens, {args.rounds} x ({args.seconds:g} s idle + "
        f"{args.seconds:g} s load), {cores} cores")
    t0 = time.perf_counter()
    bodies_list = [max_size_body(seed, limits) for seed in range(4 * args.clients * args.rounds)]
    say(f"  {len(bodies_list)} distinct max-size requests ({len(bodies_list[0]) / 1024:.0f} KiB each) "
        f"made in {time.perf_counter() - t0:.1f} s")
    fresh = iter(bodies_list)
    lock = threading.Lock()

    def next_body() -> bytes:
        with lock:
            b = next(fresh, None)
        return b if b is not None else max_size_body(random.randrange(1 << 30), limits)

    class Bodies:
        def __next__(self) -> bytes:
            return next_body()

    port = free_port()
    ray.init(address="local", num_cpus=cores + 2, include_dashboard=False, log_to_driver=False,
             namespace="eai-bench")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 120})
        serve.run(build_app({"api_key_sha256": sha256(KEY), "llm_backend": "none"}), name="eai", route_prefix="/",
                  blocking=False)
        url = f"http://127.0.0.1:{port}"
        requests.post(f"{url}/v1/embed", json={"texts": ["warm up"]}, headers=H, timeout=120).raise_for_status()
        r = requests.post(f"{url}/v1/map", data=next_body(), headers=H, timeout=120)
        r.raise_for_status()
        say(f"  warm-up map at the maximum: {r.elapsed.total_seconds():.1f} s")
        idle: dict[str, list[float]] = {"healthz": [], "embed": []}
        load: dict[str, list[float]] = {"healthz": [], "embed": []}
        outcomes: dict[int, int] = {}
        map_s: list[float] = []
        errors = {"idle": 0, "load": 0}
        for rnd in range(args.rounds):
            for kind, sink in (("idle", idle), ("load", load)):
                res = run_phase(url, args.seconds, load=kind == "load", clients=args.clients, bodies=Bodies())
                for route in sink:
                    sink[route] += res[route]
                errors[kind] += sum(res["errors"].values())
                for code, n in res["map"].items():
                    outcomes[code] = outcomes.get(code, 0) + n
                map_s += res["map_s"]
                say(f"  round {rnd + 1} {kind}: healthz p99 {p99(res['healthz']):.1f} ms, "
                    f"embed p99 {p99(res['embed']):.1f} ms" + (f", map answers {res['map']}" if kind == "load" else ""))
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    ratios = {}
    for route in ("healthz", "embed"):
        b, o = p99(idle[route]), p99(load[route])
        ratios[route] = (o / b, o, b)
        say(f"{route:8s} idle: p50 {statistics.median(idle[route]):.1f} ms p99 {b:.1f} ms ({len(idle[route])} calls); "
            f"under map load: p50 {statistics.median(load[route]):.1f} ms p99 {o:.1f} ms ({len(load[route])} calls); "
            f"ratio {o / b:.2f}")
    say(f"/v1/map under load: {outcomes} (200 ok, 503 busy then retried after Retry-After); "
        f"{len(map_s)} answered, median {statistics.median(map_s) if map_s else float('nan'):.1f} s; "
        f"probe errors idle {errors['idle']}, load {errors['load']}")
    worst = max(ratios, key=lambda k: ratios[k][0])
    _, ours, base = ratios[worst]
    say(f"the RESULT line is {worst}, the route whose p99 grew most (lower is better; target ratio <= 3)")
    print(result_line("api_load", ours, base), flush=True)
    return 0 if errors["load"] == 0 and errors["idle"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
