"""Contract cases for the database connectors: ``case_sqlite``, ``case_postgres``, ``case_mysql``.

Each case creates a private database (random suffix) on the real local
service, seeds ``people`` with ``people_rows(1, 200)`` and drops it afterwards.

Bad authentication: PostgreSQL here trusts every user on 127.0.0.1
(pg_hba ``host all all 127.0.0.1 trust``), so a wrong password would be
accepted; its bad-auth case uses a role that does not exist, which the server
rejects in the authentication phase (SQLSTATE 28000). MariaDB checks
passwords, so its case creates a user with a password and presents another.
"""
from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from eai_ray.config import MySQLSource, PostgresSource, SQLiteSource
from tests.integration.contract_data import ContractCase, people_rows

PG = dict(host="127.0.0.1", port=5432, user="postgres")
MY = dict(host="127.0.0.1", port=3306, user="root")
PEOPLE = [{"name": "people", "primary_key": ["id"], "incremental": {"cursor": "updated_at"}}]


def free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def suffix() -> str:
    return uuid.uuid4().hex[:10]


# ---------------------------------------------------------------------- PostgreSQL
def pg_admin(dbname: str = "postgres"):
    import psycopg2

    conn = psycopg2.connect(dbname=dbname, **PG)
    conn.autocommit = True
    return conn


@contextmanager
def private_pg_database(setup=None) -> Iterator[str]:
    """A private PostgreSQL database; `setup(cursor)` fills it; dropped (with its connections) at exit."""
    name = f"eai_test_{suffix()}"
    admin = pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        if setup is not None:
            conn = pg_admin(name)
            with conn.cursor() as cur:
                setup(cur)
            conn.close()
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A private PostgreSQL database, dropped (with its connections) at teardown."""
    name = f"eai_test_{suffix()}"
    admin = pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    yield name
    admin = pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def pg_insert_people(db: str, rows: list[dict[str, Any]]) -> None:
    conn = pg_admin(db)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO people (id, name, score, updated_at) VALUES (%s, %s, %s, %s)",
                        [(r["id"], r["name"], r["score"], r["updated_at"]) for r in rows])
    conn.close()


@pytest.fixture
def case_postgres(pg_database, monkeypatch) -> ContractCase:
    conn = pg_admin(pg_database)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE people (id integer PRIMARY KEY, name text, score numeric(10,2), "
                    "updated_at timestamptz)")
    conn.close()
    pg_insert_people(pg_database, people_rows(1, 200))
    monkeypatch.setenv("EAI_TEST_PG_PASSWORD", f"pw-{suffix()}")

    def make(**over):
        from eai_ray.ingestion.postgres import PostgresConnector

        cfg = dict(kind="postgres", name="pg", database=pg_database, tables=PEOPLE, **PG)
        cfg.update(over)
        return PostgresConnector(PostgresSource(**cfg))

    return ContractCase(
        kind="postgres",
        make=make,
        add_rows=lambda rows: pg_insert_people(pg_database, rows),
        make_bad_auth=lambda: make(user=f"eai_no_role_{suffix()}", password="${EAI_TEST_PG_PASSWORD}"),
        make_unreachable=lambda: make(port=free_port(), connect_timeout=2),
    )


# ---------------------------------------------------------------------- MariaDB / MySQL
def my_admin(database: str | None = None):
    import pymysql

    return pymysql.connect(database=database, autocommit=True, **MY)


@pytest.fixture
def my_database() -> Iterator[str]:
    """A private MariaDB database, dropped at teardown."""
    name = f"eai_test_{suffix()}"
    conn = my_admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn.close()
    yield name
    conn = my_admin()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


@pytest.fixture
def my_user(my_database, monkeypatch) -> Iterator[str]:
    """A MariaDB user with a password, allowed to read ``my_database``; its password is in an env var."""
    user, password = f"eai_u_{suffix()}", f"pw-{suffix()}"
    monkeypatch.setenv("EAI_TEST_MY_PASSWORD", password)
    monkeypatch.setenv("EAI_TEST_MY_WRONG_PASSWORD", f"wrong-{suffix()}")
    conn = my_admin()
    with conn.cursor() as cur:
        for host in ("%", "127.0.0.1", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
            cur.execute(f"GRANT SELECT ON `{my_database}`.* TO %s@%s", (user, host))
    conn.close()
    yield user
    conn = my_admin()
    with conn.cursor() as cur:
        for host in ("%", "127.0.0.1", "localhost"):
            cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
    conn.close()


def my_insert_people(db: str, rows: list[dict[str, Any]]) -> None:
    conn = my_admin(db)
    with conn.cursor() as cur:
        # DATETIME(6) holds UTC wall time: the connector reads it as a naive timestamp
        cur.executemany("INSERT INTO people (id, name, score, updated_at) VALUES (%s, %s, %s, %s)",
                        [(r["id"], r["name"], r["score"], r["updated_at"].replace(tzinfo=None)) for r in rows])
    conn.close()


@pytest.fixture
def case_mysql(my_database, my_user) -> ContractCase:
    conn = my_admin(my_database)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(100), score DECIMAL(10,2), "
                    "updated_at DATETIME(6))")
    conn.close()
    my_insert_people(my_database, people_rows(1, 200))

    def make(**over):
        from eai_ray.ingestion.mysql import MySQLConnector

        cfg = dict(kind="mariadb", name="my", host=MY["host"], port=MY["port"], database=my_database,
                   user=my_user, password="${EAI_TEST_MY_PASSWORD}", tables=PEOPLE)
        cfg.update(over)
        return MySQLConnector(MySQLSource(**cfg))

    return ContractCase(
        kind="mysql",
        make=make,
        add_rows=lambda rows: my_insert_people(my_database, rows),
        make_bad_auth=lambda: make(password="${EAI_TEST_MY_WRONG_PASSWORD}"),
        make_unreachable=lambda: make(port=free_port(), connect_timeout=2),
    )


# ---------------------------------------------------------------------- SQLite
def sqlite_insert_people(path: str, rows: list[dict[str, Any]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO people (id, name, score, updated_at) VALUES (?, ?, ?, ?)",
                         [(r["id"], r["name"], r["score"], r["updated_at"].isoformat()) for r in rows])
    conn.close()


@pytest.fixture
def case_sqlite(tmp_path) -> ContractCase:
    path = os.fspath(tmp_path / "people.db")
    with sqlite3.connect(path) as conn:
        # TIMESTAMP is only a declared type: SQLite stores the ISO text given to it
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL, updated_at TIMESTAMP)")
    conn.close()
    sqlite_insert_people(path, people_rows(1, 200))

    def make():
        from eai_ray.ingestion.sqlite import SQLiteConnector

        return SQLiteConnector(SQLiteSource(kind="sqlite", name="lite", path=path, tables=PEOPLE))

    return ContractCase(kind="sqlite", make=make, add_rows=lambda rows: sqlite_insert_people(path, rows))
