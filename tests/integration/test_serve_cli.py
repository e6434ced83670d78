"""`eai serve` end to end: the command starts its own local Ray and the AI application, prints the
URL, answers over HTTP with the API key, and stops cleanly on Ctrl-C (SIGINT)."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.integration.cdc_services import free_port

pytestmark = pytest.mark.integration


def test_eai_serve_command_serves_and_stops(tmp_path):
    port, key = free_port(), "serve-cli-test-key"
    env = {**os.environ, "EAI_RAY_DASHBOARD": "0", "EAI_API_KEY": key, "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "eai_ray.cli", "serve", "--port", str(port), "--llm-backend", "none"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 420
        while not any("serving at" in x for x in lines):
            assert proc.poll() is None, "".join(lines)[-3000:]
            assert time.time() < deadline, "eai serve did not come up:\n" + "".join(lines)[-3000:]
            time.sleep(1)
        url = f"http://127.0.0.1:{port}"
        assert f"serving at {url}" in "".join(lines)
        assert "API key from EAI_API_KEY" in "".join(lines) and key not in "".join(lines)  # never printed
        health = requests.get(f"{url}/healthz", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert requests.post(f"{url}/v1/embed", json={"texts": ["hi"]}, timeout=30).status_code == 401
        r = requests.post(f"{url}/v1/embed", json={"texts": ["a red bicycle", "invoice overdue"]},
                          headers={"X-API-Key": key}, timeout=120)
        assert r.status_code == 200, r.text
        vecs = r.json()["embeddings"]
        assert len(vecs) == 2 and len(vecs[0]) == 384
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Serve shuts down, the local Ray with it
        assert proc.wait(timeout=120) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:  # our own process group only
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
