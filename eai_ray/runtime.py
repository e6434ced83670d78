"""Connecting to Ray: an existing cluster (address or RAY_ADDRESS) or a new local one."""
from __future__ import annotations

import logging
import os
from typing import Any

from eai_ray.config import RayConfig

log = logging.getLogger(__name__)


def ensure_ray(cfg: RayConfig | None = None, *, quiet: bool = True) -> dict:
    """Initialise Ray once per process; returns {'address':..., 'local': bool, 'dashboard': url|None}."""
    cfg = cfg or RayConfig()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # Ray >= 2.5x clusters use token auth by default; a client must opt in to send the token,
    # and Ray reads the mode when it is first imported
    if address and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(os.path.expanduser("~/.ray/auth_token"))):
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    _quiet_token_auth_notice()
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return {"address": ctx.gcs_address, "local": False, "dashboard": None}
    os.environ.setdefault("RAY_task_oom_retries", "3")  # Ray retries OOM-killed tasks forever otherwise
    kwargs: dict[str, Any] = dict(namespace=cfg.namespace, log_to_driver=not quiet, logging_level=logging.WARNING,
                  configure_logging=True)
    if address:
        info = ray.init(address=address, **kwargs)
        local = False
    else:
        from eai_ray.settings import settings

        dashboard = settings().ray_dashboard
        # address="local": always a fresh local Ray; never attach to a `ray start` cluster found by accident
        info = ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=dashboard, **kwargs)
        local = True
    url = getattr(info, "dashboard_url", None)
    return {"address": info.address_info.get("gcs_address") if hasattr(info, "address_info") else address,
            "local": local, "dashboard": f"http://{url}" if url else None}


class _DropNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_token_auth_notice() -> None:
    """Ray prints a notice on every local start that token authentication is on (its default, which
    we keep). It says nothing the user can act on, so it is dropped; the warning Ray gives when
    authentication is OFF is kept."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice())


def tune_gc_for_streaming(threshold: int = 100_000) -> None:
    """For a process whose main job is a CDC consumer (the CDC actor, ``eai cdc``): freeze what is
    loaded now out of the cyclic collector's sight and collect young objects less often.

    A consumer holds tens of thousands of change events between flushes; with the default
    thresholds every few hundred allocations start a collection that walks them all, which cost
    about 20% of the read-and-decode time (benchmarks/cdc.py). Events and their dicts form no
    cycles, so reference counting still frees them at once; only cyclic garbage waits longer.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)
