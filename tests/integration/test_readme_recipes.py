"""The README's command blocks, run as written (doc tests): the README cannot drift from what runs.

The cluster recipe runs line by line in one bash session, in a copy of the project's `configs/`
(so its tables land in a temporary folder), with one change: `ray start --head --port 6380` is our
private head (its own ports, stopped by PID afterwards), so 6380/8265 become that head's ports.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.ray_head import ray_head

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def readme_block(section: str, index: int = 0) -> list[str]:
    """The command lines of the `index`-th ```bash block under the README heading `section`."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end if end > 0 else None], re.S)
    return [line for line in blocks[index].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_cluster_recipe_runs_as_written(tmp_path):
    lines = readme_block("Running on a Ray cluster")
    assert lines[0].startswith(". .venv/bin/activate") and lines[1].startswith("ray start --head --port 6380")
    work = tmp_path / "project"
    shutil.copytree(REPO / "configs", work / "configs")
    (work / ".venv").symlink_to(REPO / ".venv")
    with ray_head() as head:
        port = head["address"].rsplit(":", 1)[1]
        dash_port = head["dashboard"].rsplit(":", 1)[1]
        script = ["set -e"]
        for line in [lines[0], *lines[2:]]:
            script.append(line.replace("6380", port).replace("8265", dash_port))
        env = {k: v for k, v in head["env"].items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
        env["PATH"] = os.defpath  # the recipe's activate line must be what puts eai and ray on PATH
        for _attempt in range(10):  # the job agent can take a few seconds after `ray start`
            out = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env, capture_output=True,
                                 text=True, timeout=600)
            if "No available agent" not in out.stdout + out.stderr:
                break
            time.sleep(3)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "Job 'raysubmit_" in text and "succeeded" in text, text[-3000:]
    assert "silver.products" in text and "gold.products_by_category" in text  # `eai tables` from the shell
    assert "eai.source.quickstart_files.drop" in text  # `eai sources`: the job's detached actor
    assert (work / ".eai" / "quickstart_files" / "catalog.db").exists()  # next to the YAML, not in a job copy


def test_two_commands_are_the_makefile_targets():
    """The README's two set-up commands are Makefile targets that install, then run."""
    assert [line.split("#")[0].strip() for line in readme_block("Two commands")] == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: install\n\t\$\(BIN\)/eai demo", makefile, re.M)
    assert re.search(r"^test: install lint\n\t\$\(BIN\)/python -m pytest", makefile, re.M)
    assert re.search(r"^lint: install\n\t\$\(BIN\)/ruff check \.\n\t\$\(BIN\)/mypy", makefile, re.M)


def test_quickstart_commands_run_as_written(tmp_path):
    """After `eai demo`, every "look around" command of the Quickstart succeeds in the demo's folder,
    and running the demo again changes nothing."""
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "EAI_PIPELINE")}
    env["EAI_RAY_DASHBOARD"] = "0"
    first = subprocess.run([".venv/bin/eai", "demo", "--local"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    time.sleep(1.1)  # `--as-of now` must fall after the demo's last snapshot (second resolution)
    for line in readme_block("Quickstart"):
        out = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, (line, out.stdout[-2000:], out.stderr[-2000:])
        if line.startswith(".venv/bin/eai demo"):
            rerun = out.stdout
    rows = [ln.split("│")[1:-1] for ln in rerun.splitlines() if ln.startswith("│ ") and ln.count("│") == 13]
    assert len(rows) == 5 and all(r[-1].strip() == "ok" for r in rows), rerun[-3000:]
    # nothing inserted or updated the second time: the same data read again changes nothing
    assert all(r[4].strip() == "0" and r[5].strip() == "0" for r in rows), rerun[-3000:]
    assert ": OK in" in rerun and "silver unchanged" in rerun, rerun[-3000:]
