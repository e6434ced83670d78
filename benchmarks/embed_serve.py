"""embed_serve: sentences/s through the Serve HTTP endpoint vs the model called directly in one process.

ours:     `POST /v1/embed` on the eai Serve app (FastAPI ingress -> Embedder deployment with
          `@serve.batch`), `--clients` concurrent HTTP clients each sending `--per-request` sentences,
          API key on, base64 float32 answers (the OpenAI `encoding_format` convention).
baseline: `Embedder.encode(all sentences, batch_size=64)` in this process, same model, same sentences.
Both use all cores of the machine (the replica's torch threads are set to the CPU count, like the
baseline's default). Correctness: the HTTP embeddings must equal the direct ones.

    .venv/bin/python benchmarks/embed_serve.py [--sentences 2048] [--clients 8] [--per-request 32]
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import os
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import result_line, say  # noqa: E402

WORDS = ("order customer invoice parcel delivery refund payment shipping warehouse product price discount "
         "account balance supplier region nation market segment priority clerk quantity tax comment status "
         "late broken happy quickly carefully express pending returned urgent regular special final").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))).capitalize() + "." for _ in range(n)]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=2048)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-request", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the replica (default: all cores)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = os.cpu_count() or 1
    texts = sentences(args.sentences)
    say(f"embed_serve: {len(texts):,} sentences, {args.clients} clients x {args.per_request} per request, {cores} cores")

    from eai_ray.processing.models.embedder import Embedder

    emb = Embedder.load("cpu")
    emb.encode(texts[:128])  # warm-up, untimed

    import ray
    import requests
    from ray import serve

    from eai_ray.api.settings import sha256
    from serve_deployments.app import build_app

    key = "bench-" + os.urandom(8).hex()
    port = free_port()
    # logical CPUs: the Embedder asks for 1, but its torch uses every core, like the baseline
    ray.init(address="local", num_cpus=cores + 2, include_dashboard=False, log_to_driver=False,
             namespace="eai-bench")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"api_key_sha256": sha256(key), "llm_backend": "none", "embedder_threads": args.threads or cores,
                             "max_texts": max(2048, args.per_request)}),
                  name="eai", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}/v1/embed"
        chunks = [texts[i:i + args.per_request] for i in range(0, len(texts), args.per_request)]
        local = threading.local()

        def post(chunk: list[str]) -> np.ndarray:
            sess = getattr(local, "s", None) or requests.Session()
            local.s = sess
            r = sess.post(url, json={"texts": chunk, "encoding_format": "base64"}, headers={"X-API-Key": key},
                          timeout=120)
            r.raise_for_status()
            body = r.json()
            return np.frombuffer(base64.b64decode(body["embeddings_base64"]), dtype="<f4").reshape(body["count"],
                                                                                                 body["dim"])

        pool = cf.ThreadPoolExecutor(args.clients)

        def run_http() -> np.ndarray:
            return np.concatenate(list(pool.map(post, chunks)))

        run_http()  # warm-up: replica threads, connections, torch kernels
        # interleaved runs (direct, http, direct, http...): a shared machine's noise hits both alike
        base_times, ours_times = [], []
        for i in range(args.runs):
            t0 = time.perf_counter()
            direct = emb.encode(texts, batch_size=64)
            base_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            via_http = run_http()
            ours_times.append(time.perf_counter() - t0)
            say(f"  run {i + 1}/{args.runs}: direct {base_times[-1]:.2f} s, serve http {ours_times[-1]:.2f} s")
        pool.shutdown()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    base_s, ours_s = statistics.median(base_times), statistics.median(ours_times)
    base_rate, ours_rate = len(texts) / base_s, len(texts) / ours_s

    same = np.allclose(via_http, direct, atol=1e-4)
    say(f"HTTP embeddings equal direct ones: {same} (max abs diff {np.abs(via_http - direct).max():.2e})")
    say(f"ours:     {ours_s:.2f} s median -> {ours_rate:,.0f} sentences/s (Serve HTTP, dynamic batching)")
    say(f"baseline: {base_s:.2f} s median -> {base_rate:,.0f} sentences/s (direct encode, one process)")
    print(result_line("embed_serve", ours_rate, base_rate), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
