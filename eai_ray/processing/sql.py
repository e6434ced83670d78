"""SQL over the lakehouse: validation with sqlglot, column lineage, and read-only execution on DuckDB.

Every SQL text that eai-ray runs (gold models now, NL-to-SQL later) goes through
``validate_select`` first: exactly one read-only SELECT over known tables and columns.
"""
from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from eai_ray.errors import SqlValidationError

DIALECT = "duckdb"
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Create, exp.Alter, exp.Merge,
                exp.Command, exp.Copy, exp.Set, exp.Pragma, exp.TruncateTable,
                exp.Attach if hasattr(exp, "Attach") else exp.Command)
_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "sqlite_master", "duckdb_tables", "system", "temp", "main"}


@dataclass
class ValidatedQuery:
    sql: str  # normalised, DuckDB dialect
    tables: list[str]  # fully qualified: "silver.orders"
    columns: list[str]  # output column names
    expression: exp.Expression


def table_name(t: exp.Table, default_ns: str = "silver") -> str:
    return f"{t.db or default_ns}.{t.name}"


def validate_select(sql: str, schema: dict[str, dict[str, str]], *, default_ns: str = "silver",
                    limit: int | None = None) -> ValidatedQuery:
    """Parse and check one read-only SELECT whose tables and columns all exist in `schema`.

    `schema` maps "ns.table" -> {column: type}. Raises SqlValidationError naming the problem.

    Example::

        validate_select("SELECT id FROM silver.t", {"silver.t": {"id": "BIGINT"}})
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except (SqlglotError, RecursionError) as exc:  # unterminated quotes, nesting deeper than the parser
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:300]
        raise SqlValidationError(f"SQL does not parse: {detail}") from None
    if len(statements) != 1:
        raise SqlValidationError(f"expected exactly one statement, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)) and not (
            isinstance(tree, exp.Subquery)):
        raise SqlValidationError(f"only SELECT queries are allowed, got {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, _WRITE_NODES):
            raise SqlValidationError(f"statement contains a forbidden {node.key.upper()} clause")
        if isinstance(node, exp.Into):
            raise SqlValidationError("SELECT ... INTO is not allowed")
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    tables: list[str] = []
    for t in tree.find_all(exp.Table):
        if not t.db and t.name in ctes:
            continue
        if (t.db or "").lower() in _SYSTEM_SCHEMAS or (t.catalog or ""):
            raise SqlValidationError(f"table {t.sql()} is not allowed: only lakehouse tables can be read")
        if isinstance(t.this, exp.Anonymous) or t.args.get("this") is None or not t.name:
            raise SqlValidationError(f"table function {t.sql()} is not allowed")
        full = table_name(t, default_ns)
        if full not in schema:
            raise SqlValidationError(f"unknown table {full}; known tables: {', '.join(sorted(schema)) or 'none'}")
        tables.append(full)
    for fn in tree.find_all(exp.Anonymous):
        if fn.name.lower().startswith(("read_", "pg_", "duckdb_", "sqlite_", "glob", "getenv", "current_setting")):
            raise SqlValidationError(f"function {fn.name} is not allowed")
    for _ in tree.find_all(exp.ReadCSV) if hasattr(exp, "ReadCSV") else []:
        raise SqlValidationError("reading files is not allowed")
    _refuse_case_collisions(tree, schema, tables)
    nested = _nested_schema(schema, default_ns)
    try:
        qualified = qualify(tree.copy(), schema=nested, dialect=DIALECT, db=default_ns,
                            validate_qualify_columns=True, identify=False)
    except OptimizeError as exc:
        raise SqlValidationError(f"unknown column or ambiguous reference: {exc}") from None
    except (SqlglotError, RecursionError) as exc:
        raise SqlValidationError(f"SQL cannot be checked: {str(exc).splitlines()[0][:300] or 'nested too deeply'}") from None
    columns = [s.alias_or_name for s in qualified.selects] if hasattr(qualified, "selects") else []
    text = qualified.sql(dialect=DIALECT)
    if limit is not None:
        cur = qualified.args.get("limit") if isinstance(qualified, exp.Select) else None
        cur_n = int(cur.expression.name) if cur is not None and cur.expression.is_int else None
        if isinstance(qualified, exp.Select) and cur_n is not None and cur_n <= limit:
            pass
        elif isinstance(qualified, exp.Select) and cur is None:
            qualified = qualified.limit(limit)
            text = qualified.sql(dialect=DIALECT)
        else:  # a union, a parenthesised query, a larger or computed limit: cap the outermost result
            text = f"SELECT * FROM ({text}) AS _eai_limited LIMIT {int(limit)}"
    return ValidatedQuery(sql=text, tables=sorted(set(tables)), columns=columns, expression=qualified)


def _refuse_case_collisions(tree: exp.Expression, schema: dict[str, dict[str, str]], tables: list[str]) -> None:
    """Refuse a column written in a case that is not stored, when the table holds a case-collision
    group (``Total`` with ``total__2``, see ``processing.silver.silver_names``): SQL engines fold
    case, so ``total`` would silently read ``Total``."""
    import re

    stored = {c for t in tables for c in schema.get(t, {})}
    groups: dict[str, list[str]] = {}
    for c in stored:
        m = re.fullmatch(r"(.+)__\d+", c)
        if m:
            groups.setdefault(m.group(1).casefold(), []).append(c)
    if not groups:
        return
    for col in tree.find_all(exp.Column):
        written = col.name
        key = written.casefold()
        if written in stored or key not in groups:
            continue
        same = sorted(c for c in stored if c.casefold() == key)
        raise SqlValidationError(
            f"column {written!r} is ambiguous: the source had columns differing only by case, stored as "
            f"{', '.join(repr(c) for c in same + sorted(groups[key]))}; write the stored name in double quotes")


def _nested_schema(schema: dict[str, dict[str, str]], default_ns: str) -> dict:
    out: dict[str, dict[str, dict[str, str]]] = {}
    for full, cols in schema.items():
        ns, name = full.split(".", 1) if "." in full else (default_ns, full)
        out.setdefault(ns, {})[name] = cols
    return out


def referenced_tables(sql: str, default_ns: str = "silver") -> list[str]:
    """Tables a SQL text reads (CTE names excluded), for DAG ordering before validation."""
    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
    except (SqlglotError, RecursionError) as exc:
        raise SqlValidationError(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    return sorted({table_name(t, default_ns) for t in tree.find_all(exp.Table) if t.name and not (not t.db and t.name in ctes)})


def column_lineage(query: ValidatedQuery, schema: dict[str, dict[str, str]],
                   default_ns: str = "silver") -> list[tuple[str, str, str]]:
    """(source table, source column, output column) for every output column of a validated query."""
    from sqlglot.lineage import lineage

    nested = _nested_schema(schema, default_ns)
    edges: list[tuple[str, str, str]] = []
    for col in query.columns:
        try:
            node = lineage(col, query.expression, schema=nested, dialect=DIALECT)
        except Exception:  # sqlglot cannot trace some constructs (e.g. star over a join): skip that column
            continue
        for leaf in node.walk():
            if leaf.downstream:
                continue
            src = leaf.expression
            if isinstance(src, exp.Table):
                tname = table_name(src, default_ns)
                cname = leaf.name.split(".")[-1]
                if tname in schema and cname in schema[tname]:
                    edges.append((tname, cname, col))
    return list(dict.fromkeys(edges))


def arrow_schema_as_sql(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


@dataclass(frozen=True)
class SqlBudget:
    """What one query may use: DuckDB memory and threads, wall time, and the size of its result."""

    memory_limit: str = "2GB"
    threads: int = 2
    timeout_s: float = 120.0
    max_result_bytes: int = 1 << 30


DEFAULT_BUDGET = SqlBudget()


@contextmanager
def sandbox(budget: SqlBudget = DEFAULT_BUDGET):
    """A DuckDB connection every query of ours runs on: no file or network access, no extension
    loading, bounded memory and threads, no spilling to disk, settings locked against the SQL itself.

    Example::

        with sandbox() as con:
            con.register("t", table)
            result = execute_bounded(con, "SELECT count(*) FROM t")
    """
    import duckdb

    con = duckdb.connect(config={
        "enable_external_access": False, "autoload_known_extensions": False,
        "autoinstall_known_extensions": False, "memory_limit": budget.memory_limit,
        "threads": budget.threads, "max_temp_directory_size": "0KB", "lock_configuration": True})
    try:
        yield con
    finally:
        con.close()


def execute_bounded(con, sql: str, budget: SqlBudget = DEFAULT_BUDGET) -> pa.Table:
    """Run `sql` on a sandbox connection within the budget; over it, a refusal that says which limit.

    The query is interrupted after ``timeout_s``; its result is read batch by batch and refused
    once it passes ``max_result_bytes`` (Arrow results live outside DuckDB's memory limit).
    """
    import threading

    import duckdb

    timer = threading.Timer(budget.timeout_s, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        reader = arrow_reader(con.execute(sql), 65_536)
        batches, size = [], 0
        for batch in reader:
            size += batch.nbytes
            if size > budget.max_result_bytes:
                raise SqlValidationError(f"the query's result passed {budget.max_result_bytes >> 20} MiB; "
                                         "aggregate or filter it, or add a LIMIT")
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise SqlValidationError(f"the query ran past its time budget of {budget.timeout_s:g} s and was "
                                 "stopped; filter or aggregate earlier") from None
    except duckdb.OutOfMemoryException:
        raise SqlValidationError(f"the query needs more than its memory budget ({budget.memory_limit}); "
                                 "filter or aggregate earlier") from None
    except duckdb.Error as exc:
        raise SqlValidationError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        timer.cancel()


def run_select(query: ValidatedQuery, tables: dict[str, pa.Table], *, budget: SqlBudget = DEFAULT_BUDGET) -> pa.Table:
    """Execute a validated query on DuckDB over in-memory Arrow tables, in the sandbox and its budget."""
    import duckdb

    with sandbox(budget) as con:
        try:
            for full, data in tables.items():
                ns, name = full.split(".", 1)
                reg = f"__eai_{ns}_{name}"
                con.register(reg, data)
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{ns}"')
                con.execute(f'CREATE OR REPLACE VIEW "{ns}"."{name}" AS SELECT * FROM "{reg}"')
        except duckdb.Error as exc:
            raise SqlValidationError(f"query failed: {str(exc).splitlines()[0]}") from None
        return execute_bounded(con, query.sql, budget)


def evaluate_over(table: pa.Table, select_list: str, *, where: str | None = None, distinct: bool = False,
                  limit: int | None = None, budget: SqlBudget = DEFAULT_BUDGET) -> pa.Table:
    """Evaluate configuration SQL (a rule or a semantic-model expression) over one Arrow table: the
    same validator and sandbox as every other query. Example::

        evaluate_over(pa.table({"qty": [1, -1]}), "coalesce(NOT (qty > 0), false) AS bad")
    """
    rel = "silver.__eai_rows"
    sql = f"SELECT {'DISTINCT ' if distinct else ''}{select_list} FROM {rel}" + (f" WHERE {where}" if where else "")
    vq = validate_select(sql, {rel: {f.name: str(f.type) for f in table.schema}}, limit=limit)
    return run_select(vq, {rel: table}, budget=budget)


def arrow_reader(result, batch_size: int) -> pa.RecordBatchReader:
    """A DuckDB result as an Arrow batch reader (``fetch_record_batch`` is deprecated in DuckDB 1.5)."""
    read = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
    return read(batch_size)


def fetch_arrow(result) -> pa.Table:
    """A DuckDB result as a pa.Table (`.arrow()` returns a reader in DuckDB >= 1.4)."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):  # renamed across DuckDB 1.x -> 2.x
        if hasattr(result, name):
            out = getattr(result, name)()
            return out if isinstance(out, pa.Table) else out.read_all()
    raise RuntimeError("this DuckDB version has no Arrow result API")


def dependencies(models: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """{model: [tables it reads]} for (name, sql) pairs."""
    return {name: referenced_tables(sql) for name, sql in models}
