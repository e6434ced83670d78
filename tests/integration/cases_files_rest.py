"""Contract cases for the files and REST connectors, and a small real HTTP server for REST tests.

``LocalServer`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 with a free port in
a daemon thread; its app is a plain function ``(Request) -> Response`` so each
test states exactly what the API does (pages, 429s, slow answers).
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eai_ray.config import FileSource, RestSource
from eai_ray.ingestion.files import FileConnector
from eai_ray.ingestion.rest import RestConnector
from tests.integration.contract_data import ContractCase, people_rows


# --------------------------------------------------------------------------- local HTTP server
@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


class LocalServer:
    """A real HTTP server on 127.0.0.1:<free port>, answering with ``app(request)``."""

    def __init__(self, app: Callable[[Request], Response]) -> None:
        self.app = app
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server naming
                parts = urlsplit(self.path)
                req = Request(parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
                              {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
                server.requests.append(req)
                resp = server.app(req)
                body = resp.body if isinstance(resp.body, bytes) else json.dumps(resp.body).encode()
                try:
                    self.send_response(resp.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in resp.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is the point of some tests

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


# --------------------------------------------------------------------------- people API
class PeopleApi:
    """GET /people?page=&per_page=&updated_since= with bearer auth; ``updated_since`` is inclusive."""

    def __init__(self, token: str, rows: list[dict[str, Any]]) -> None:
        self.token = token
        self.rows = [json_row(r) for r in rows]

    def __call__(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return Response(401, {"error": "unauthorized"})
        if req.path != "/people":
            return Response(404, {"error": "not found"})
        rows = self.rows
        since = req.query.get("updated_since")
        if since:
            rows = [r for r in rows if r["updated_at"] >= since]
        page, size = int(req.query.get("page", 1)), int(req.query.get("per_page", 50))
        return Response(200, {"data": rows[(page - 1) * size: page * size], "page": page, "total": len(rows)})


@pytest.fixture
def case_rest(monkeypatch):
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("EAI_TEST_REST_TOKEN", token)
    monkeypatch.setenv("EAI_TEST_REST_BAD_TOKEN", f"bad-{uuid.uuid4().hex}")
    api = PeopleApi(token, people_rows(1, 200))
    server = LocalServer(api)

    def source(base_url: str, token_ref: str, **extra) -> RestSource:
        return RestSource.model_validate({
            "kind": "rest", "name": "api", "base_url": base_url, "max_retries": 2, "timeout": 5,
            "auth": {"type": "bearer", "token": token_ref}, **extra,
            "resources": [{
                "name": "people", "path": "/people", "records_path": "data", "primary_key": ["id"],
                "pagination": {"type": "page", "page_param": "page", "size_param": "per_page", "page_size": 50},
                "incremental": {"cursor": "updated_at", "param": "updated_since"},
            }],
        })

    yield ContractCase(
        kind="rest",
        make=lambda: RestConnector(source(server.url, "${EAI_TEST_REST_TOKEN}"), backoff_base=0.01),
        add_rows=lambda rows: api.rows.extend(json_row(r) for r in rows),
        make_bad_auth=lambda: RestConnector(source(server.url, "${EAI_TEST_REST_BAD_TOKEN}"), backoff_base=0.01),
        make_unreachable=lambda: RestConnector(
            source(f"http://127.0.0.1:{free_port()}", "${EAI_TEST_REST_TOKEN}", max_retries=1, timeout=2),
            backoff_base=0.01),
    )
    server.stop()


# --------------------------------------------------------------------------- files
class _FileCase:
    """Writes people rows as numbered files; new rows always go to a new file."""

    def __init__(self, folder: Path, ext: str, write: Callable[[Path, list[dict[str, Any]]], None]) -> None:
        self.folder, self.ext, self.write = folder, ext, write
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.count += 1
        self.write(self.folder / f"people_{self.count:03d}.{self.ext}", rows)

    def connector(self) -> FileConnector:
        return FileConnector(FileSource.model_validate({
            "kind": "files", "name": "files", "path": str(self.folder),
            "resources": [{"name": "people", "pattern": f"people_*.{self.ext}", "primary_key": ["id"]}],
        }))

    def case(self, kind: str) -> ContractCase:
        rows = people_rows(1, 200)
        self.add(rows[:100])  # two files so partitioned reads have something to split
        self.add(rows[100:])
        return ContractCase(kind=kind, make=self.connector, add_rows=self.add)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(json_row(r) for r in rows)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(json_row(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def case_files_csv(tmp_path):
    return _FileCase(tmp_path / "csv", "csv", write_csv).case("files_csv")


@pytest.fixture
def case_files_jsonl(tmp_path):
    return _FileCase(tmp_path / "jsonl", "jsonl", write_jsonl).case("files_jsonl")


@pytest.fixture
def case_files_parquet(tmp_path):
    return _FileCase(tmp_path / "parquet", "parquet", write_parquet).case("files_parquet")
