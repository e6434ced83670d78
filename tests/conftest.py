"""Shared fixtures. Connector contract cases live in plugin modules, one per family."""
import os

import pytest

os.environ.setdefault("RAY_task_oom_retries", "3")

pytest_plugins = [
    "tests.integration.cases_files_rest",
    "tests.integration.cases_db",
    "tests.integration.cdc_services",
]


@pytest.fixture
def tmp_state(tmp_path):
    """A private state dir (catalog, warehouse, metadata) for one test."""
    d = tmp_path / "state"
    d.mkdir()
    return d
