"""Shared fixtures. Connector contract cases live in plugin modules, one per family."""
import os

import pytest

os.environ.setdefault("RAY_task_oom_retries", "3")

pytest_plugins = [
    "tests.integration.cases_files_rest",
    "tests.integration.cases_db",
    "tests.integration.cdc_services",
]


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """What the code caches or creates under the user's home goes to a folder of this test session:
    the trained schema-mapping scorer (EAI_CACHE_DIR), the API key `eai serve` creates
    (EAI_API_KEY_FILE) and the models' libraries' caches (XDG_CACHE_HOME: Hugging Face, torch).
    EAI_TEST_CACHE_DIR names a folder to keep between sessions instead (the scorer trains once)."""
    root = os.environ.get("EAI_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("caches"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EAI_CACHE_DIR", os.path.join(root, "eai-ray"))
        mp.setenv("XDG_CACHE_HOME", os.path.join(root, "xdg"))
        mp.setenv("EAI_API_KEY_FILE", os.path.join(root, "eai", "api_key"))
        yield root


@pytest.fixture
def tmp_state(tmp_path):
    """A private state dir (catalog, warehouse, metadata) for one test."""
    d = tmp_path / "state"
    d.mkdir()
    return d
