"""A randomized change workload and the checks that prove exactly-once CDC.

The workload records how many change events each statement produced (its row count), so
bronze can be checked for "every change exactly once", and silver is compared with the
source table row for row.
"""
from __future__ import annotations

import collections
import decimal
import random
import string
import threading
import time

from eai_ray.storage import tables

COLUMNS = ["id", "k", "name", "qty", "price", "flag", "big"]


def pg_schema(name: str) -> str:
    return (f"CREATE TABLE {name} (id int PRIMARY KEY, k int NOT NULL, name text, qty bigint, "
            f"price numeric(12,2), flag boolean, big text)")


def my_schema(name: str) -> str:
    return (f"CREATE TABLE {name} (id int PRIMARY KEY, k int NOT NULL, name varchar(200), qty bigint, "
            f"price decimal(12,2), flag boolean, big mediumtext) ENGINE=InnoDB")


def _big(rng: random.Random) -> str:
    # incompressible, over the TOAST threshold: PostgreSQL stores it out of line
    return "".join(rng.choices(string.ascii_letters + string.digits, k=rng.choice([10, 3000, 9000])))


class Workload:
    """Random inserts, updates, deletes, multi-statement transactions, hot keys and wide rows."""

    def __init__(self, connect, table: str, *, seed: int, placeholder: str = "%s", ids: int = 400) -> None:
        self.connect = connect
        self.table = table
        self.rng = random.Random(seed)
        self.ph = placeholder
        self.ids = ids
        self.counts: collections.Counter = collections.Counter()
        self.transactions = 0
        self.errors = 0
        self.stop = threading.Event()

    def seed_rows(self, n: int) -> None:
        conn = self.connect()
        cur = conn.cursor()
        for i in range(1, n + 1):
            cur.execute(f"INSERT INTO {self.table} VALUES ({', '.join([self.ph] * 7)})", self._row(i))
        conn.commit()
        conn.close()

    def _row(self, i: int):
        r = self.rng
        return (i, r.randint(0, 9), r.choice(["alpha", "beta", "", None, "Ünïcødé ✓", "x" * 50]),
                r.randint(-10**12, 10**12), decimal.Decimal(r.randint(-10**6, 10**6)) / 100,
                r.choice([True, False, None]), _big(r) if r.random() < 0.3 else None)

    def _statement(self, cur) -> None:
        r = self.rng
        op = r.random()
        i = r.randint(1, self.ids) if r.random() > 0.2 else r.randint(1, 5)  # hot keys 1..5
        if op < 0.35:
            cur.execute(f"SELECT 1 FROM {self.table} WHERE id = {self.ph}", (i,))
            if cur.fetchone():
                op = 0.5
            else:
                cur.execute(f"INSERT INTO {self.table} VALUES ({', '.join([self.ph] * 7)})", self._row(i))
                self.counts["c"] += cur.rowcount
                return
        if op < 0.8:
            if r.random() < 0.5:  # big untouched: an unchanged TOAST value
                cur.execute(f"UPDATE {self.table} SET qty = qty + 1, k = {self.ph} WHERE id = {self.ph}",
                            (r.randint(0, 9), i))
            else:
                cur.execute(f"UPDATE {self.table} SET name = {self.ph}, price = {self.ph}, big = {self.ph} "
                            f"WHERE id = {self.ph}", (r.choice(["u1", "u2", None]),
                                                     decimal.Decimal(r.randint(0, 10**5)) / 100, _big(r), i))
            self.counts["u"] += cur.rowcount
        elif op < 0.95:
            cur.execute(f"DELETE FROM {self.table} WHERE id = {self.ph}", (i,))
            self.counts["d"] += cur.rowcount
        else:  # several rows in one statement
            cur.execute(f"UPDATE {self.table} SET flag = NOT coalesce(flag, false) WHERE k = {self.ph}",
                        (r.randint(0, 9),))
            self.counts["u"] += cur.rowcount

    def run(self, seconds: float, rate: float = 150.0) -> None:
        """Transactions of 1-8 statements at about `rate` statements/s; survives killed connections."""
        conn = self.connect()
        end = time.time() + seconds
        while time.time() < end and not self.stop.is_set():
            before = collections.Counter(self.counts)
            try:
                cur = conn.cursor()
                n = self.rng.choice([1, 1, 1, 2, 3, 8])
                for _ in range(n):
                    self._statement(cur)
                conn.commit()
                self.transactions += 1
                time.sleep(n / rate)
            except Exception:  # noqa: BLE001 - a lost connection rolls the transaction back
                self.counts = before
                self.errors += 1
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.2)
                conn = self.connect()
        conn.close()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def source_rows(connect, table: str) -> list[tuple]:
    conn = connect()
    cur = conn.cursor()
    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY id")
    rows = [tuple(bool(v) if c == "flag" and v is not None else _norm(v) for c, v in zip(COLUMNS, r))
            for r in cur.fetchall()]
    conn.close()
    return rows


def _norm(v):
    if isinstance(v, decimal.Decimal):
        return v.quantize(decimal.Decimal("0.01"))
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    return v


def silver_rows(catalog, name: str, *, bool_cols=("flag",)) -> list[tuple]:
    t = tables.read(tables.load(catalog, name))
    t = t.sort_by("id")
    out = []
    for r in t.select(COLUMNS).to_pylist():
        row = []
        for c in COLUMNS:
            v = r[c]
            if c in bool_cols and isinstance(v, int) and not isinstance(v, bool):
                v = bool(v)
            row.append(_norm(v))
        out.append(tuple(row))
    return out


def bronze_counts(catalog, name: str, *, streamed_only: bool = False) -> tuple[collections.Counter, int, int]:
    """(events per op, rows, distinct positions) of a bronze change log (snapshot rows share a position)."""
    t = tables.read(tables.load(catalog, name), columns=("_eai_op", "_eai_position"))
    ops = collections.Counter(t.column("_eai_op").to_pylist())
    pos = [p for o, p in zip(t.column("_eai_op").to_pylist(), t.column("_eai_position").to_pylist())
           if not streamed_only or o != "r"]
    return ops, len(pos), len(set(pos))


def wait_until(fn, timeout: float, interval: float = 0.5):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last
