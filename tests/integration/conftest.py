"""One local Ray per test session (Ray start costs seconds and ~1 GB)."""
import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("RAY_task_oom_retries", "3")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, namespace="eai-test", log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
