"""`ray job submit --working-dir . -- eai run PIPELINE.yaml` against a head started with `ray start --head`,
with Ray's token authentication on (the default)."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from eai_ray.demo.sample import build_files
from tests.integration.ray_head import ray_head

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_job_submit_runs_the_pipeline_on_the_cluster(tmp_path):
    import random

    counts = build_files(tmp_path / "files", random.Random(1), products=50, events=60)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"""
name: jobtest
state_dir: {tmp_path / 'state'}
sources:
  - kind: files
    name: drop
    path: {tmp_path / 'files'}
    resources:
      - {{name: products, pattern: "products/*.csv", primary_key: [id]}}
""")
    with ray_head() as head:
        env = {**head["env"], "RAY_AUTH_MODE": "token", "RAY_API_SERVER_ADDRESS": head["dashboard"]}
        cmd = [str(Path(head["env"]["PATH"].split(":")[0]) / "ray"), "job", "submit", "--working-dir", str(REPO),
               "--", "eai", "run", str(pipeline), "--json"]
        for _attempt in range(10):  # the job agent can take a few seconds after `ray start`
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
            if "No available agent" not in out.stderr + out.stdout:
                break
            time.sleep(3)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        start = out.stdout.index('{\n  "run_id"')
        end = out.stdout.index("\n}\n", start) + 2
        summary = json.loads(out.stdout[start:end])
        assert summary["executor"] == "ray" and summary["status"] == "ok"
        assert summary["tables"][0]["bronze_rows"] == counts["products"]
        # the source actor outlives the job (detached) and answers `eai sources` from another process
        sources = subprocess.run([str(Path(head["env"]["PATH"].split(":")[0]) / "eai"), "sources", "-p",
                                  str(pipeline), "--json"], env={**head["env"], "RAY_ADDRESS": head["address"]},
                                 capture_output=True, text=True, timeout=120)
        assert sources.returncode == 0, sources.stderr[-2000:]
        assert json.loads(sources.stdout)[0]["actor"] == "eai.source.jobtest.drop"
