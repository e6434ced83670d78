"""A CDC actor instance that Ray no longer routes calls to (a kill Ray ignored) leaves; the live one stays."""
from __future__ import annotations

import os
import threading
import time

import pytest
import ray

from actors.cdc_actor import _exit_if_superseded
from tests.integration.cdc_workload import wait_until

pytestmark = pytest.mark.integration


@ray.remote(num_cpus=0, max_concurrency=4)
class Probe:
    """Runs a 'consumer' thread and the same watchdog as CdcActor / KafkaPublisherActor."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stop.wait, daemon=True)
        self._thread.start()
        threading.Thread(target=_exit_if_superseded, args=(name, self._stop, self._thread, "probe", 0.3),
                         daemon=True).start()

    def pid(self) -> int:
        return os.getpid()


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_superseded_instance_exits_live_one_stays(ray_session):
    name = f"eai.test.live.{os.getpid()}"
    live = Probe.options(name=name).remote(name)
    live_pid = ray.get(live.pid.remote(), timeout=120)
    # the same code outside Ray's routing for `name`: what a worker that ignored its kill runs
    stray = Probe.remote(name)
    stray_pid = ray.get(stray.pid.remote(), timeout=120)
    assert stray_pid != live_pid
    assert wait_until(lambda: not _alive(stray_pid), timeout=60), "the superseded instance kept running"
    time.sleep(1.0)
    assert ray.get(live.pid.remote(), timeout=60) == live_pid  # the live one checked itself and stayed
    ray.kill(live, no_restart=True)
