"""Private database servers and a Kafka-protocol broker for the CDC tests (a pytest plugin).

The shared PostgreSQL (5432, wal_level=replica) and MariaDB (3306, binlog off) are never
touched: each fixture starts its own server from the installed binaries in a temp folder,
on a free port, and stops exactly that process (by PID / its data folder) at teardown.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


def _as_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PrivatePostgres:
    dir: Path
    port: int
    user: str = "postgres"
    proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"

    def connect(self, dbname: str = "postgres"):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def stop(self) -> None:
        # runuser does not pass signals on to postgres: stop the server through its own data folder
        subprocess.run(_as_user([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.dir / "data"), "-m", "fast",
                                 "-w", "-t", "30"]), capture_output=True)
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_postgres(base: Path) -> PrivatePostgres:
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(_as_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                             "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    port = free_port()
    cmd = _as_user([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
                    "-c", "listen_addresses=127.0.0.1", "-c", "wal_level=logical",
                    "-c", "max_replication_slots=20", "-c", "max_wal_senders=20", "-c", "fsync=off",
                    "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "wal_sender_timeout=60s", "-c", "max_connections=100"])
    log = open(base / "postgres.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    pg = PrivatePostgres(dir=base, port=port, proc=proc)
    _wait_port(port)
    end = time.time() + 30
    while True:
        try:
            pg.connect().close()
            break
        except Exception:
            if time.time() > end:
                raise
            time.sleep(0.2)
    return pg


@dataclass
class PrivateMariaDB:
    dir: Path
    port: int
    proc: subprocess.Popen | None = None
    user: str = "root"

    def connect(self, database: str | None = None):
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", database=database, autocommit=True)

    def create_database(self, name: str) -> str:
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()
        return name

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_mariadb(base: Path) -> PrivateMariaDB:
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", *user], check=True, capture_output=True)
    port = free_port()
    cmd = ["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
           f"--socket={base / 'mysqld.sock'}", f"--pid-file={base / 'mysqld.pid'}", "--log-bin=binlog",
           "--server-id=1", "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
           "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", *user]
    log = open(base / "mariadb.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    db = PrivateMariaDB(dir=base, port=port, proc=proc)
    _wait_port(port)
    end = time.time() + 30
    while True:
        try:
            db.connect().close()
            break
        except Exception:
            if time.time() > end:
                raise
            time.sleep(0.2)
    return db


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class PrivateKafka:
    dir: Path
    port: int
    proc: subprocess.Popen | None = None
    restarts: int = field(default=0)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "noida-db"
        if not exe.exists():
            import sys
            exe = Path(sys.executable).parent / "noida-db"
        log = open(self.dir / "kafka.log", "ab")
        self.proc = subprocess.Popen([str(exe), "start", "--only", "kafka", "--kafka-port", str(self.port),
                                      "--data-dir", str(self.dir / "data")], stdout=log, stderr=log,
                                     start_new_session=True)
        _wait_port(self.port)
        # the launcher exits with its broker: one that quit right after starting (or a port that
        # answered for a broker still going down) must not pass for a running broker
        time.sleep(0.5)
        if self.proc.poll() is not None or not self.up():
            raise RuntimeError(f"noida-db on port {self.port} did not stay up (exit {self.proc.poll()}): "
                               f"{self.log_tail()}")

    def up(self) -> bool:
        """The broker process runs and its port accepts connections."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.dir / "kafka.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def ensure_running(self) -> bool:
        """Start the broker again if it is down (True then): the kill test restarts it under load, and a
        broker left down turns every later check into a wait for nothing."""
        if self.up():
            return False
        self.stop()
        self.start()
        return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # the `noida-db` launcher runs the broker as its child, in the launcher's own session:
            # wait for that child too, or a restart finds the data dir still held ("already running")
            children = _children(self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: only this broker
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            end = time.time() + 10
            while any(_alive(c) for c in children) and time.time() < end:
                time.sleep(0.05)
            for c in children:
                if _alive(c):
                    os.kill(c, signal.SIGKILL)
            end = time.time() + 10  # gone, port and data dir released, before a restart starts another
            while any(_alive(c) for c in children) and time.time() < end:
                time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


@pytest.fixture(scope="session")
def private_postgres():
    base = Path(tempfile.mkdtemp(prefix="eai-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    pg = start_postgres(base / "pg")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def private_mariadb():
    base = Path(tempfile.mkdtemp(prefix="eai-my-", dir="/tmp"))
    db = start_mariadb(base / "mariadb")
    try:
        yield db
    finally:
        db.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def private_kafka():
    base = Path(tempfile.mkdtemp(prefix="eai-kafka-", dir="/tmp"))
    broker = PrivateKafka(dir=base, port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
