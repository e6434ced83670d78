"""A diagnostic trace of the CDC publisher and the Kafka reader (off unless asked for).

Each trace point is a DEBUG log line (``eai_ray.cdc.trace``); with ``EAI_CDC_TRACE=<file>`` it is
also appended to that file as one JSON line (``{"t": ..., "pid": ..., "ev": ..., ...}``), from
every process that writes it (Ray actors inherit the variable from the driver that started Ray).
It records what decides a restart: the publisher's resume point and where it came from, its
producer (transactional id, producer id, epoch, open transaction), the control topic's ends and
last marker, and the reader's seek positions.

Example::

    EAI_CDC_TRACE=/tmp/cdc-trace.jsonl pytest tests/integration/test_cdc_kill.py ...
"""
from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("eai_ray.cdc.trace")
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _trace_file() -> str | None:
    """EAI_CDC_TRACE, read once per process (tracing sits on the publisher's path)."""
    from eai_ray.settings import settings

    return settings().cdc_trace


def enabled() -> bool:
    return bool(_trace_file()) or log.isEnabledFor(logging.DEBUG)


def trace(ev: str, **fields: Any) -> None:
    """One trace line (cheap when tracing is off)."""
    path = _trace_file()
    if not path and not log.isEnabledFor(logging.DEBUG):
        return
    line = json.dumps({"t": round(time.time(), 3), "pid": os.getpid(), "ev": ev, **fields}, default=str,
                      sort_keys=False)
    log.debug("%s", line)
    if path:
        try:
            with _lock, open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:  # a trace must never break the pipeline
            pass


def producer_state(producer) -> dict[str, Any]:
    """Transactional id, producer id, epoch and transaction state of a kafka-python producer."""
    tm = getattr(producer, "_transaction_manager", None)
    if tm is None:
        return {}
    try:
        pe = tm.producer_id_and_epoch
        return {"transactional_id": tm.transactional_id, "producer_id": pe.producer_id, "epoch": pe.epoch,
                "state": getattr(tm._current_state, "name", str(tm._current_state)),
                "in_transaction": bool(tm._test_has_ongoing_transaction())}
    except Exception as exc:  # noqa: BLE001 - an internal of kafka-python; the trace only
        return {"error": repr(exc)}
