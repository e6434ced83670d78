"""`eai serve`: start the AI application (Embedder, LLM, HTTP API) on Ray Serve and print its URL.

Without RAY_ADDRESS it starts a local Ray and keeps serving until Ctrl-C; with RAY_ADDRESS (or
``--address``) it deploys to that cluster and returns (the application keeps running there).
"""
from __future__ import annotations

import time

from eai_ray.cli.common import require

# Ray Serve's own HTTP stack (ray[serve]): checked before Ray starts, so a missing one is one line
SERVE_MODULES = ("fastapi", "starlette", "uvicorn")


def register(add) -> None:
    sp = add("serve", cmd_serve, "serve the AI layer over HTTP (Ray Serve): /v1/embed, /v1/enrich, /v1/map, /v1/sql",
             None, extra="ai")
    sp.add_argument("--host", default=None, help="bind address (default EAI_SERVE_HOST or 127.0.0.1)")
    sp.add_argument("--port", type=int, default=None, help="HTTP port (default EAI_SERVE_PORT or 8000)")
    sp.add_argument("--address", default=None, help="Ray cluster address (default RAY_ADDRESS; none: a local Ray)")
    sp.add_argument("--gpu", action="store_true", default=None, help="Embedder replicas ask for a GPU (EAI_SERVE_GPU=1)")
    sp.add_argument("--llm-backend", choices=["local", "openai", "vllm", "none"], default=None,
                    help="LLM backend (default EAI_LLM_BACKEND or local)")
    sp.add_argument("--no-auth", action="store_true", help="accept requests without the API key (local experiments only)")
    sp.add_argument("--detach", action="store_true",
                    help="return after deploying even on a local Ray (it stops with this process anyway)")


def cmd_serve(args) -> int:
    from eai_ray.api.settings import ServeSettings, serve_app_args
    from eai_ray.config import RayConfig
    from eai_ray.processing.enrich import SERVE_APP
    from eai_ray.runtime import ensure_ray

    require(*SERVE_MODULES)
    settings = ServeSettings.from_env(host=args.host, port=args.port, gpu=args.gpu)
    app_args, key_from = serve_app_args(settings, llm_backend=args.llm_backend, auth=not args.no_auth)
    if key_from is None:
        key_note = "authentication OFF (--no-auth)"
    else:
        key_note = f"API key from {key_from} (send it as X-API-Key or Authorization: Bearer)"

    info = ensure_ray(RayConfig(address=args.address), quiet=True)
    from ray import serve

    from serve_deployments.app import build_app

    # the proxy's end-to-end timeout is a backstop: each expensive route stops its own work sooner
    serve.start(http_options={"host": settings.host, "port": settings.port,
                              "request_timeout_s": settings.request_timeout_s})
    print(f"starting {SERVE_APP} on Ray ({'local' if info['local'] else info['address']}); first start loads the models...",
          flush=True)
    t0 = time.perf_counter()
    serve.run(build_app(app_args), name=SERVE_APP, route_prefix=settings.route_prefix, blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    print(f"serving at {url}  (docs: {url}/docs, ready in {time.perf_counter() - t0:.1f}s)")
    print(key_note)
    if not info["local"] or args.detach:
        return 0
    print("Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
