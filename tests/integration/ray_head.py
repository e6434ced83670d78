"""Start a private `ray start --head` for a test and stop exactly its processes, by PID.

Never `ray stop`: it stops every Ray on the machine, including other people's.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_of(marker: str) -> list[int]:
    """PIDs whose command line names `marker`, plus all their descendants (workers rename themselves)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    children: dict[int, list[int]] = {}
    for row in rows:
        children.setdefault(int(row[1]), []).append(int(row[0]))
    found = {int(r[0]) for r in rows if len(r) == 3 and marker in r[2]}
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(os.getpid())
    return sorted(found)


@contextmanager
def ray_head(num_cpus: int = 2):
    """Yield {'address', 'dashboard', 'env'}; every process of this head is killed on exit."""
    temp_dir = tempfile.mkdtemp(prefix="eairt-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ports = {k: free_port() for k in ("port", "dashboard", "agent", "client", "metrics", "agent_grpc", "runtime_env")}
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "ray"), "start", "--head", f"--port={ports['port']}", f"--num-cpus={num_cpus}",
           f"--dashboard-port={ports['dashboard']}", f"--dashboard-agent-listen-port={ports['agent']}",
           f"--dashboard-agent-grpc-port={ports['agent_grpc']}", f"--runtime-env-agent-port={ports['runtime_env']}",
           f"--ray-client-server-port={ports['client']}", f"--metrics-export-port={ports['metrics']}",
           "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=120)
    try:
        yield {"address": f"127.0.0.1:{ports['port']}", "dashboard": f"http://127.0.0.1:{ports['dashboard']}",
               "env": env}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _pids_of(temp_dir)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if pids:
                time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)
