"""`eai demo`: a messy sample shop - a SQLite database, a folder of CSV/JSON files and a REST API.

The mess is deliberate and deterministic (seeded): nulls, duplicate keys, wrong types,
invalid e-mails, negative amounts, unknown statuses, orphan foreign keys, a ragged CSV
row, invalid UTF-8, nested JSON with a field that changes type, a malformed JSON line,
late-arriving (older) versions of a key, duplicate API records and one HTTP 429.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

TOKEN_ENV = "EAI_DEMO_TOKEN"
COUNTRIES = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL"]
STATUSES = ["placed", "paid", "shipped", "cancelled"]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class Demo:
    root: Path
    sqlite_path: Path
    files_dir: Path
    api_url: str
    pipeline_path: Path
    source_rows: dict[str, int]


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def build_sqlite(path: Path, rng: random.Random, *, customers: int, orders: int) -> dict[str, int]:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, country TEXT,
                                signup_date TEXT, updated_at TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, amount TEXT, currency TEXT,
                             status TEXT, ordered_at TEXT, updated_at TEXT);
    """)
    rows = []
    for i in range(1, customers + 1):
        name = None if i % 97 == 0 else f"Customer {i}"
        email = f"customer{i}@example.com" if i % 53 else f"customer{i}-at-example.com"  # invalid e-mail
        country = rng.choice(COUNTRIES) if i % 71 else rng.choice(["xx", "de", None])  # warn-level mess
        signup = (T0 - dt.timedelta(days=rng.randint(1, 900))).date().isoformat()
        rows.append((i, name, email, country, signup, _iso(T0 + dt.timedelta(minutes=i))))
    con.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?)", rows)
    order_rows = []
    for i in range(1, orders + 1):
        cust = rng.randint(1, customers) if i % 211 else customers + rng.randint(1, 50)  # orphan key
        amount = f"{rng.uniform(5, 500):.2f}"
        if i % 149 == 0:
            amount = rng.choice(["N/A", "12,50", "abc"])  # wrong type
        elif i % 167 == 0:
            amount = f"-{amount}"  # negative amount
        status = rng.choice(STATUSES) if i % 131 else "unknown"
        ordered = T0 + dt.timedelta(minutes=3 * i)
        order_rows.append((i, cust, amount, "EUR", status, _iso(ordered), _iso(ordered + dt.timedelta(hours=1))))
    con.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?)", order_rows)
    con.commit()
    con.close()
    return {"customers": customers, "orders": orders}


def build_files(folder: Path, rng: random.Random, *, products: int, events: int) -> dict[str, int]:
    (folder / "products").mkdir(parents=True, exist_ok=True)
    (folder / "events").mkdir(parents=True, exist_ok=True)
    lines = [b"id,name,category,price,in_stock,updated_at"]
    for i in range(1, products + 1):
        price = f"{rng.uniform(1, 200):.2f}" if i % 37 else "free"  # wrong type
        lines.append(f"{i},Product {i},{rng.choice(['books', 'games', 'garden'])},{price},"
                     f"{rng.choice(['true', 'false', 'yes', 'no'])},{_iso(T0 + dt.timedelta(hours=i))}".encode())
    # a newer version of product 3 (duplicate key: the later updated_at wins)
    lines.append(f"3,Product 3 (v2),books,9.99,true,{_iso(T0 + dt.timedelta(days=400))}".encode())
    lines.append(b"9001,Ragged product,books,1.00")  # too few fields
    lines.append("9002,Caf\u00e9 cr\u00e8me,food,3.50,true,2026-02-01 00:00:00".encode("latin-1"))  # invalid UTF-8
    (folder / "products" / "products.csv").write_bytes(b"\n".join(lines) + b"\n")

    out, n = [], 0
    for i in range(1, events + 1):
        rec = {"event_id": i, "type": rng.choice(["view", "click", "purchase"]),
               "ts": (T0 + dt.timedelta(seconds=37 * i)).isoformat(),
               "customer": {"id": rng.randint(1, 400), "segment": rng.choice(["new", "vip", "regular"])},
               "tags": rng.sample(["mobile", "web", "promo", "email"], k=rng.randint(0, 2)),
               "value": rng.randint(1, 100) if i % 41 else "ninety"}  # a field whose type changes
        out.append(json.dumps(rec))
        n += 1
    late = json.loads(out[9])
    late["ts"] = (T0 - dt.timedelta(days=1)).isoformat()  # late-arriving OLDER version of event 10
    late["type"] = "stale"
    out.append(json.dumps(late))
    out.append('{"event_id": 99999, "type": "view", "ts": ')  # malformed line
    (folder / "events" / "events-0001.jsonl").write_text("\n".join(out) + "\n")
    return {"products": products + 3, "events": n + 2}


def payments_data(rng: random.Random, count: int, orders: int) -> list[dict]:
    pays = []
    for i in range(1, count + 1):
        pays.append({"id": i, "order_id": rng.randint(1, orders), "amount": round(rng.uniform(5, 500), 2),
                     "method": rng.choice(["card", "paypal", "transfer"]),
                     "paid_at": (T0 + dt.timedelta(minutes=5 * i)).isoformat(),
                     "payer": {"country": rng.choice(COUNTRIES), "verified": bool(i % 3)}})
    pays[20]["amount"] = -1.0  # breaks the expression rule
    pays.append(dict(pays[5]))  # duplicate record served twice
    return pays


class _Api(BaseHTTPRequestHandler):
    records: list[dict] = []
    token = ""
    page_size = 100
    throttled = {"done": False}

    def log_message(self, *args):  # keep the demo output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        url = urlparse(self.path)
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(401, {"error": "unauthorized"})
        if url.path != "/api/payments":
            return self._send(404, {"error": "not found"})
        page = int(parse_qs(url.query).get("page", ["1"])[0])
        if page == 2 and not self.throttled["done"]:
            self.throttled["done"] = True  # one 429 to show Retry-After being honoured
            return self._send(429, {"error": "slow down"}, {"Retry-After": "1"})
        start = (page - 1) * self.page_size
        chunk = self.records[start:start + self.page_size]
        return self._send(200, {"data": chunk, "page": page, "total": len(self.records)})

    def _send(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def pipeline_yaml(*, sqlite_path: Path, files_dir: Path, api_url: str) -> str:
    return f"""# The demo pipeline, written by `eai demo`. Its REST source (api) and token exist only while
# `eai demo` runs: run `eai demo` again to re-run this pipeline (unchanged data changes nothing).
name: demo
state_dir: state
sources:
  - kind: sqlite
    name: shop
    path: {sqlite_path}
    tables:
      - {{name: customers, primary_key: [id], incremental: {{cursor: updated_at}}}}
      - {{name: orders, primary_key: [id], incremental: {{cursor: updated_at}}}}
  - kind: files
    name: drop
    path: {files_dir}
    resources:
      - {{name: products, pattern: "products/*.csv", primary_key: [id]}}
      - {{name: events, pattern: "events/*.jsonl", primary_key: [event_id]}}
  - kind: rest
    name: api
    base_url: {api_url}
    auth: {{type: bearer, token: "${{{TOKEN_ENV}}}"}}
    rate_limit: 50
    resources:
      - name: payments
        path: /api/payments
        records_path: data
        pagination: {{type: page, page_param: page, max_pages: 100}}
        primary_key: [id]

silver:
  - name: customers
    source: shop.customers
    primary_key: [id]
    sequence_by: updated_at
    columns:
      id: {{type: int64, nullable: false}}
      name: {{type: string}}
      email: {{type: string}}
      country: {{type: string}}
      signup_date: {{type: date}}
      updated_at: {{type: timestamp}}
    rules:
      - {{name: valid_email, column: email, regex: '^[^@\\s]+@[^@\\s]+\\.[a-z]+$', action: quarantine}}
      - {{name: known_country, column: country, accepted_values: {COUNTRIES}, action: warn}}
    freshness: {{column: updated_at, max_age_hours: 100000}}
  - name: orders
    source: shop.orders
    primary_key: [id]
    sequence_by: updated_at
    columns:
      id: {{type: int64, nullable: false}}
      customer_id: {{type: int64, nullable: false}}
      amount: {{type: "decimal(12,2)"}}
      currency: {{type: string}}
      status: {{type: string}}
      ordered_at: {{type: timestamp}}
      updated_at: {{type: timestamp}}
    rules:
      - {{name: amount_not_negative, column: amount, min: 0, action: quarantine}}
      - {{name: known_status, column: status, accepted_values: {STATUSES}, action: quarantine}}
      - {{name: customer_exists, column: customer_id, references: customers.id, action: warn}}
  - name: products
    source: drop.products
    primary_key: [id]
    sequence_by: updated_at
    columns:
      id: {{type: int64, nullable: false}}
      name: {{type: string}}
      category: {{type: string}}
      price: {{type: "decimal(10,2)"}}
      in_stock: {{type: bool}}
      updated_at: {{type: timestamp}}
    rules:
      - {{name: price_positive, column: price, min: 0, action: quarantine}}
  - name: events
    source: drop.events
    primary_key: [event_id]
    sequence_by: ts
  - name: payments
    source: api.payments
    primary_key: [id]
    sequence_by: paid_at
    rules:
      - {{name: amount_positive, expression: "amount > 0", action: quarantine}}

gold:
  - name: revenue_by_country
    description: Revenue and order count per customer country, cancelled orders excluded
    sql: |
      SELECT c.country, COUNT(*) AS orders, SUM(o.amount) AS revenue
      FROM silver.orders o JOIN silver.customers c ON o.customer_id = c.id
      WHERE o.status <> 'cancelled'
      GROUP BY c.country
  - name: daily_orders
    sql: |
      SELECT CAST(ordered_at AS DATE) AS day, COUNT(*) AS orders, SUM(amount) AS revenue
      FROM silver.orders GROUP BY 1
  - name: top_customers
    sql: |
      SELECT r.country, c.id AS customer_id, c.name, SUM(o.amount) AS spent
      FROM silver.orders o JOIN silver.customers c ON o.customer_id = c.id
      JOIN gold.revenue_by_country r ON r.country = c.country
      GROUP BY r.country, c.id, c.name
"""


@contextmanager
def build_demo(root: Path, *, rows: int = 5000, seed: int = 7):
    """Create the sample sources under `root`, serve the API, and yield a Demo; the API stops on exit."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts = build_sqlite(root / "shop.db", rng, customers=max(50, rows // 10), orders=rows)
    counts.update(build_files(root / "files", rng, products=max(20, rows // 25), events=max(50, rows // 5)))
    token = os.environ.get(TOKEN_ENV) or f"demo-{rng.getrandbits(64):x}"
    os.environ[TOKEN_ENV] = token  # the pipeline YAML references it; it is never written to disk
    records = payments_data(rng, max(50, rows // 4), rows)
    handler = type("DemoApi", (_Api,), {"records": records, "token": token, "throttled": {"done": False}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    counts["payments"] = len(records)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(pipeline_yaml(sqlite_path=root / "shop.db", files_dir=root / "files", api_url=url))
    try:
        yield Demo(root=root, sqlite_path=root / "shop.db", files_dir=root / "files", api_url=url,
                   pipeline_path=pipeline, source_rows=counts)
    finally:
        server.shutdown()
        server.server_close()
