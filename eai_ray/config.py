"""Pipeline configuration: one YAML file parsed into validated pydantic models.

Every model forbids unknown keys. Errors name the file, the field path and what
was expected. Secrets are references (``${ENV_VAR}`` or ``file:/path``), never
literal values in the YAML, and are masked in every repr.

Example::

    from eai_ray.config import load_pipeline
    cfg = load_pipeline("configs/demo.yaml")
    cfg.sources[0].name
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from eai_ray.errors import ConfigError, SecretError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Action = Literal["warn", "quarantine", "fail"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------- secrets
_PROVIDED: dict[str, str] = {}  # secrets handed to this process by the driver (Ray workers lack its env)


class SecretRef(str):
    """A reference to a secret: ``${ENV_VAR}`` or ``file:/path/to/secret``.

    ``resolve()`` reads the value at connection time; the reference itself is
    all that is stored, logged or written to the catalog.
    """

    def resolve(self) -> str:
        ref = str(self)
        if ref in _PROVIDED:
            return _PROVIDED[ref]
        if ref.startswith("file:"):
            path = Path(ref[5:]).expanduser()
            try:
                return _clean_secret(path.read_text(), str(path))
            except OSError as exc:
                raise SecretError(f"cannot read secret file {path}: {exc.strerror}",
                                  expected="a readable file holding the secret") from None
        m = _ENV_REF.fullmatch(ref)
        if not m:
            raise SecretError(f"'{_mask(ref)}' is not a secret reference",
                              expected="${ENV_VAR} or file:/path")
        value = os.environ.get(m.group(1), m.group(2))
        if value is None:
            raise SecretError(f"environment variable {m.group(1)} is not set",
                              expected=f"export {m.group(1)}=... before running")
        return _clean_secret(value, m.group(1))

    def __repr__(self) -> str:
        return f"SecretRef({str(self)!r})"


def _clean_secret(value: str, where: str) -> str:
    """The secret without surrounding whitespace (a trailing newline from `echo` or a file); a line
    break or control character inside it is refused, naming where it came from, never the value.
    Every resolved value is handed to the redaction layer, so no message or log line can show it."""
    from eai_ray.redact import remember

    value = value.strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SecretError(f"the secret in {where} holds a line break or control character inside it",
                          expected="one line with no control characters")
    remember(value)
    return value


def provide_secrets(values: dict[str, str] | None) -> None:
    """Make secrets resolved by the driver available in this process (a Ray actor or task)."""
    if values:
        from eai_ray.redact import remember

        _PROVIDED.update(values)
        for v in values.values():
            remember(v)


def secret_refs(node: Any) -> list[SecretRef]:
    """Every secret reference inside a config object: SecretRef fields, and the ${VAR} references
    kept inside the strings of credential-bearing fields (headers, storage options, URIs...)."""
    if isinstance(node, SecretRef):
        return [node]
    if isinstance(node, str):
        return [SecretRef(m.group(0)) for m in _ENV_REF.finditer(node)]
    if isinstance(node, BaseModel):
        return [r for name in type(node).model_fields for r in secret_refs(getattr(node, name))]
    if isinstance(node, (list, tuple)):
        return [r for v in node for r in secret_refs(v)]
    if isinstance(node, dict):
        return [r for v in node.values() for r in secret_refs(v)]
    return []


def with_secrets(node: Any) -> Any:
    """A copy of a config object (or value) with the ${VAR} references kept in its strings resolved,
    for the process that connects with it; SecretRef fields stay references (their users resolve
    them). Each resolved value is known to the redaction layer. Never ship or store the result.

    Example::

        conn = RestConnector(with_secrets(source))   # inside the source actor
    """
    if isinstance(node, SecretRef):
        return node
    if isinstance(node, str):
        return _ENV_REF.sub(lambda m: SecretRef(m.group(0)).resolve(), node) if "${" in node else node
    if isinstance(node, BaseModel):
        changes = {name: with_secrets(getattr(node, name)) for name in type(node).model_fields}
        return node.model_copy(update=changes)
    if isinstance(node, list):
        return [with_secrets(v) for v in node]
    if isinstance(node, tuple):
        return tuple(with_secrets(v) for v in node)
    if isinstance(node, dict):
        return {k: with_secrets(v) for k, v in node.items()}
    return node


def resolvable_secrets(node: Any) -> dict[str, str]:
    """{reference: value} for the secrets of `node` that this process can resolve.

    The driver sends these to the actors and tasks it starts, through Ray's object store
    (never through runtime_env, which the dashboard shows). References it cannot resolve
    are left to the worker's own environment.
    """
    out = {}
    for ref in secret_refs(node):
        try:
            out[str(ref)] = ref.resolve()
        except SecretError:
            pass
    return out


def _mask(value: str) -> str:
    return "*" * min(len(value), 8)


def _secret(value: Any) -> SecretRef | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    value = str(value)
    if value.startswith("file:") or _ENV_REF.fullmatch(value):
        return SecretRef(value)
    raise ValueError("secrets must be references, not literal values: "
                     "write ${ENV_VAR} (or ${ENV_VAR:-default}) or file:/path/to/secret")


Secret = Annotated[Any, Field(default=None)]


# --------------------------------------------------------------------------- sources
class Pagination(Model):
    type: Literal["none", "page", "offset", "cursor", "link"] = "none"
    page_param: str = "page"
    size_param: str | None = None
    page_size: int | None = Field(default=None, gt=0)
    start_page: int = 1
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    cursor_path: str | None = Field(default=None, description="dotted path of the next cursor in the response")
    total_path: str | None = None
    max_pages: int | None = Field(default=None, gt=0)


class RestAuth(Model):
    type: Literal["none", "bearer", "basic", "header"] = "none"
    token: Secret = None
    username: str | None = None
    password: Secret = None
    header_name: str = "X-API-Key"

    @field_validator("token", "password", mode="before")
    @classmethod
    def _check_secret(cls, v):
        return _secret(v)


class Incremental(Model):
    cursor: str = Field(description="column or record field that only grows (updated_at, id)")
    initial: Any = None
    param: str | None = Field(default=None, description="REST: query parameter that receives the last cursor value")


OnOutOfRange = Literal["quarantine", "clamp", "null"]
WILDCARD = "*"  # a table entry that stands for every table and view of the source's schema


# source, silver and gold names become parts of Iceberg identifiers ("silver.<name>"), where a dot
# would start a nested namespace; resource names may hold dots (derived table names replace them)
TableName = Annotated[str, Field(pattern=r"^[^.\s/\\]+$", max_length=200,
                                 description="no dots, spaces or slashes")]


class DbTable(Model):
    """One table, view or query of a database source.

    A plain string is short for ``{name: <string>}``; ``"*"`` stands for every table and view
    (see ``expand_tables``) and takes no other setting than ``on_out_of_range``.
    """

    name: str = Field(description="resource name, used for bronze/<source>_<name>")
    table: str | None = Field(default=None, description="table name, or '<schema>.<table>' when 'schema' is unset")
    schema_: str | None = Field(default=None, alias="schema",
                                description="schema (PostgreSQL) or database (MySQL) of 'table'; when set, "
                                            "'table' is one literal name and may hold dots")
    query: str | None = None
    primary_key: list[str] = Field(default_factory=list)
    incremental: Incremental | None = None
    partition_column: str | None = None
    partitions: int = Field(default=0, ge=0, description="0 = one per CPU when the table is large")
    on_out_of_range: OnOutOfRange | None = Field(
        default=None, description="values outside their Arrow type's range (infinite or BC timestamps, NaN "
                                  "decimals): quarantine | clamp | null; default: the source's setting")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_of(self):
        if self.is_wildcard:
            extra = [f for f in ("table", "schema_", "query", "incremental", "partition_column")
                     if getattr(self, f)] + (["primary_key"] if self.primary_key else [])
            if extra:
                raise ValueError(f"'*' stands for every table and takes no {', '.join(extra)}; "
                                 "list a table by name to give it settings")
            return self
        if not self.table and not self.query:
            self.table = self.name
        if self.table and self.query:
            raise ValueError("give either 'table' or 'query', not both")
        return self

    @property
    def is_wildcard(self) -> bool:
        return self.name == WILDCARD


class FileResource(Model):
    name: str
    pattern: str = Field(description="glob relative to the source path, e.g. 'orders/*.csv'")
    format: Literal["auto", "csv", "json", "jsonl", "parquet"] = "auto"
    primary_key: list[str] = Field(default_factory=list)
    incremental: Incremental | None = None
    delimiter: str = Field(default="auto", description="CSV field separator; 'auto' sniffs , ; tab or | from the "
                           "file (column-count consistency), 'tab' or '\\t' for a tab")
    encoding: str = Field(default="auto", description="text encoding (a Python codec name); 'auto': the byte order "
                          "mark, else UTF-8 when valid, else UTF-16/32 by NUL patterns, cp1252/Latin-1 or what "
                          "charset-normalizer recognises")
    quotechar: str = Field(default="auto", description="CSV quote character; 'auto' sniffs \" or ', 'none' turns "
                           "quoting off")
    header: bool | Literal["auto"] = Field(default="auto", description="whether the first CSV record names the "
                                           "columns; 'auto' sniffs it (false names them column_1, column_2, ...)")

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        v = {"tab": "\t", "\\t": "\t"}.get(v, v)
        if v != "auto" and (len(v) != 1 or v in "\r\n"):
            raise ValueError("expected 'auto' or one character such as ',', ';', '|' or 'tab'")
        return v

    @field_validator("quotechar")
    @classmethod
    def _quotechar(cls, v: str) -> str:
        if v not in ("auto", "none") and (len(v) != 1 or v in "\r\n"):
            raise ValueError("expected 'auto', 'none' or one character such as '\"'")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        import codecs

        if v != "auto":
            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"unknown encoding {v!r}: expected 'auto' or a Python codec name such as "
                                 "'utf-8', 'utf-16', 'cp1252' or 'latin-1'") from None
        return v


class RestResource(Model):
    name: str
    path: str
    params: dict[str, Any] = Field(default_factory=dict)
    records_path: str | None = Field(default=None, description="dotted path to the list of records, e.g. 'data.items'")
    pagination: Pagination = Field(default_factory=Pagination)
    primary_key: list[str] = Field(default_factory=list)
    incremental: Incremental | None = None


class CdcConfig(Model):
    """Log-based change capture for a database source (``eai cdc start``)."""
    slot: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,63}$",
                             description="PostgreSQL replication slot (lower-case letters, digits and _, at most "
                                         "63: the server's rule); default eai_<pipeline>_<source>")
    publication: str | None = Field(default=None, description="PostgreSQL publication; default eai_<pipeline>_<source>")
    server_id: int = Field(default=4242, description="MariaDB/MySQL replica server id of the reader")
    flush_rows: int = Field(default=5_000, gt=0, description="flush a micro-batch at this many events")
    flush_seconds: float = Field(default=0.5, gt=0, description="or when its oldest event is this old")
    transport: Literal["direct", "kafka"] = "direct"
    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port] of the Kafka brokers")
    topic_prefix: str = "eai.cdc"
    kafka_partitions: int = Field(default=1, ge=1, description="partitions of each per-table topic (records are "
                                  "keyed by primary key); the control topic keeps one")
    deletes: Literal["remove", "tombstone"] = "remove"
    scd2: bool = Field(default=False, description="also keep silver.<name>_history (SCD type 2)")
    on_slot_lost: Literal["resnapshot", "fail"] = "resnapshot"
    stall_seconds: float = Field(default=60.0, gt=0, description="Kafka transport: a publisher that published "
                                 "nothing for this long while the source moved on is stalled (reported by "
                                 "`eai cdc status`, restarted from its resume point)")

    @model_validator(mode="after")
    def _kafka(self):
        if self.transport == "kafka" and not self.kafka_bootstrap:
            raise ValueError("transport 'kafka' needs kafka_bootstrap (host:port)")
        return self


class _DbSource(Model):
    name: TableName
    host: str = "127.0.0.1"
    port: int | None = None
    database: str
    user: str | None = None
    password: Secret = None
    connect_timeout: float = 10.0
    tables: list[DbTable] = Field(min_length=1, description="tables, views or queries; '*' = every table and view")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of table names '*' skips")
    on_out_of_range: OnOutOfRange = Field(
        default="quarantine", description="values outside their Arrow type's range: quarantine (row flagged, "
                                          "silver quarantines it), clamp (to the nearest end) or null")
    cdc: CdcConfig | None = Field(default=None, description="log-based CDC settings")

    @field_validator("password", mode="before")
    @classmethod
    def _check_secret(cls, v):
        return _secret(v)


class PostgresSource(_DbSource):
    kind: Literal["postgres"]
    schema_: str = Field(default="public", alias="schema")
    sslmode: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _whole_schema(cls, v: Any) -> Any:
        # `schema: sales` with no table list means every table and view of that schema
        if isinstance(v, dict) and "schema" in v and "tables" not in v:
            return {**v, "tables": [WILDCARD]}
        return v


class MySQLSource(_DbSource):
    kind: Literal["mysql", "mariadb"]


class SQLiteSource(Model):
    kind: Literal["sqlite"]
    name: TableName
    path: str
    tables: list[DbTable] = Field(min_length=1, description="tables, views or queries; '*' = every table and view")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of table names '*' skips")
    on_out_of_range: OnOutOfRange = "quarantine"  # SQLite has no typed dates; kept for a uniform config


DbSource = PostgresSource | MySQLSource | SQLiteSource


def has_wildcard(source: Any) -> TypeGuard[DbSource]:
    """True when a database source lists ``"*"``: its resources are known only after ``expand_tables``."""
    return any(getattr(t, "is_wildcard", False) for t in getattr(source, "tables", None) or [])


def expand_tables(source: DbSource, names: list[str]) -> DbSource:
    """A copy of ``source`` whose ``"*"`` entry is replaced by one default entry per name in ``names``.

    ``names`` are the concrete tables and views the wildcard stands for (the connector's
    ``list_tables()``). Explicit entries keep their settings and position; a name an explicit
    entry already covers (as its name or its table) is not added twice; ``exclude`` patterns
    apply to wildcard names only. Pure: no connection. Example::

        src = PostgresSource(kind="postgres", name="pg", database="shop", tables=["*", {"name": "orders"}])
        [t.name for t in expand_tables(src, ["customers", "orders"]).tables]  # ['customers', 'orders']
    """
    if not has_wildcard(source):
        return source
    explicit = [t for t in source.tables if not t.is_wildcard]
    home = getattr(source, "schema_", None) or getattr(source, "database", None)
    covered = {t.name for t in explicit} | {_unqualified(t, home) for t in explicit if t.table}
    wildcard = next(t for t in source.tables if t.is_wildcard)
    out: list[DbTable] = []
    for t in source.tables:
        if not t.is_wildcard:
            out.append(t)
            continue
        for name in names:
            if name in covered or _excluded(name, source.exclude):
                continue
            covered.add(name)
            out.append(DbTable.model_validate({"name": name, "table": name, "schema": home,
                                               "on_out_of_range": wildcard.on_out_of_range}))
    return source.model_copy(update={"tables": out})


def _unqualified(table: DbTable, home: str | None) -> str:
    """The bare table name of an explicit entry that lives in the source's own schema."""
    assert table.table is not None  # callers pass entries with a table
    if table.schema_ is not None or "." not in table.table:
        return table.table if table.schema_ in (None, home) else ""
    schema, _, name = table.table.rpartition(".")
    return name if schema == home else ""


def _excluded(name: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, p) for p in patterns)


class FileSource(Model):
    kind: Literal["files"]
    name: TableName
    path: str = Field(description="local folder or fsspec URI such as s3://bucket/prefix")
    resources: list[FileResource] = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)


class RestSource(Model):
    kind: Literal["rest"]
    name: TableName
    base_url: str
    auth: RestAuth = Field(default_factory=RestAuth)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    rate_limit: float | None = Field(default=None, gt=0, description="requests per second, client side")
    follow_foreign_links: bool = Field(default=False, description="follow a `Link: next` to another origin "
                                       "(or from https to http), without credentials; default: stop with an error")
    resources: list[RestResource] = Field(min_length=1)


SourceConfig = Annotated[
    PostgresSource | MySQLSource | SQLiteSource | FileSource | RestSource,
    Field(discriminator="kind"),
]


def resources_of(source) -> list:
    return list(getattr(source, "tables", None) or getattr(source, "resources", None) or [])


# --------------------------------------------------------------------------- silver / gold
_TYPE_RE = re.compile(
    r"^(int8|int16|int32|int64|int|bigint|float|float32|float64|double|bool|boolean|string|text|"
    r"date|timestamp|timestamptz|uuid|json|decimal\(\s*\d+\s*,\s*\d+\s*\))$"
)


class ColumnSpec(Model):
    type: str
    nullable: bool = True
    source: str | None = Field(default=None, description="source column name when it differs")
    description: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        v = v.strip().lower()
        if not _TYPE_RE.match(v):
            raise ValueError(
                f"unknown type '{v}'; use one of int32, int64, float64, decimal(p,s), bool, string, "
                "date, timestamp, timestamptz, uuid, json")
        return v


class Rule(Model):
    name: str | None = None
    column: str | None = None
    action: Action = "quarantine"
    not_null: bool | None = None
    regex: str | None = None
    min: float | None = None
    max: float | None = None
    accepted_values: list[Any] | None = None
    expression: str | None = Field(default=None, description="SQL boolean expression over the row, e.g. 'qty > 0'")
    references: str | None = Field(default=None, description="'<silver table>.<column>' that must contain the value")

    @model_validator(mode="after")
    def _one_check(self):
        checks = [c for c in ("not_null", "regex", "accepted_values", "expression", "references")
                  if getattr(self, c) not in (None, False)]
        if self.min is not None or self.max is not None:
            checks.append("range")
        if len(checks) != 1:
            raise ValueError("a rule needs exactly one check: not_null, regex, min/max, "
                             f"accepted_values, expression or references (got {checks or 'none'})")
        if checks[0] != "expression" and not self.column:
            raise ValueError(f"rule '{checks[0]}' needs 'column'")
        if checks[0] == "regex":
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        if not self.name:
            self.name = f"{self.column or 'row'}_{checks[0]}"
        return self

    @property
    def check(self) -> str:
        for c in ("not_null", "regex", "accepted_values", "expression", "references"):
            if getattr(self, c) not in (None, False):
                return c
        return "range"


class Freshness(Model):
    column: str
    max_age_hours: float = Field(gt=0)


class EnrichSpec(Model):
    """One LLM/embedding enrichment of a silver column into a new column (``eai_ray.processing.enrich``)."""
    column: str = Field(description="input text column")
    task: Literal["extract", "classify", "summarize"]
    output: str | None = Field(default=None, description="new column; default '<column>_<task>'")
    labels: dict[str, str] | list[str] | None = Field(default=None, description="classify: labels, or label -> description")
    entity: str | None = Field(default=None, description="extract: what to extract, e.g. 'city names'")
    method: Literal["auto", "embedding", "llm"] = Field(default="auto", description="classify: auto = label embeddings")
    max_tokens: int = Field(default=64, gt=0, le=1024)

    @model_validator(mode="after")
    def _task_fields(self):
        if self.task == "classify" and not self.labels:
            raise ValueError("task 'classify' needs 'labels'")
        if self.task == "extract" and not self.entity:
            raise ValueError("task 'extract' needs 'entity' (what to extract, e.g. 'company names')")
        if not self.output:
            self.output = f"{self.column}_{self.task}"
        return self


class SilverTable(Model):
    name: TableName
    source: str = Field(description="'<source name>.<resource name>'")
    primary_key: list[str] = Field(default_factory=list)
    sequence_by: str | None = Field(default=None, description="column ordering versions of a key: latest wins")
    columns: dict[str, ColumnSpec] | None = Field(default=None, description="target schema; discovered when omitted")
    rules: list[Rule] = Field(default_factory=list)
    freshness: Freshness | None = None
    on_removed_column: Literal["fill_null", "fail"] = "fill_null"
    full_refresh: Literal["replace", "append"] | None = Field(
        default=None, description="how a table without a key takes a load: 'replace' (silver becomes the latest "
        "full read, in one snapshot) or 'append'; default: replace for full reads, append for incremental ones")
    enrich: list[EnrichSpec] = Field(default_factory=list, description="LLM/embedding columns added to silver rows")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        src, dot, res = v.partition(".")
        if not dot or not src or not res:
            raise ValueError("write '<source name>.<resource name>', e.g. 'shop.customers'")
        return v


class GoldModel(Model):
    name: TableName
    sql: str
    description: str | None = None


# --------------------------------------------------------------------------- runtime
class CatalogConfig(Model):
    name: str = "eai"
    type: Literal["sql", "rest"] = "sql"
    uri: str | None = Field(default=None, description="SQLAlchemy URI (sql) or REST URL; default sqlite in state_dir")
    warehouse: str | None = Field(default=None, description="folder or object-store URI; default state_dir/warehouse")
    properties: dict[str, str] = Field(default_factory=dict)


class RayConfig(Model):
    address: str | None = Field(default=None, description="None: RAY_ADDRESS or a new local Ray")
    namespace: str = "eai"
    num_cpus: int | None = None


class PipelineConfig(Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    state_dir: str = ".eai"
    metadata_uri: str | None = Field(default=None, description="SQLAlchemy URI of the metadata catalog")
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    sources: list[SourceConfig] = Field(min_length=1)
    silver: list[SilverTable] = Field(default_factory=list)
    gold: list[GoldModel] = Field(default_factory=list)
    batch_rows: int = Field(default=250_000, gt=0, description="rows per extracted batch")
    auto_silver: bool = Field(default=True, description="give resources without a silver entry a silver table "
                                                        "with the discovered schema")

    source_file: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_refs(self):
        from collections import Counter

        dup = {n for n, k in Counter(s.name for s in self.sources).items() if k > 1}
        if dup:
            raise ValueError(f"duplicate source names: {sorted(dup)}")
        known = {f"{s.name}.{r.name}" for s in self.sources for r in resources_of(s)}
        open_ended = {s.name for s in self.sources if has_wildcard(s)}  # tables known after listing
        for i, t in enumerate(self.silver):
            if t.source not in known and t.source.split(".", 1)[0] not in open_ended:
                raise ValueError(f"silver[{i}].source '{t.source}' matches no source resource; "
                                 f"known: {sorted(known)}")
        return self

    # paths resolve against the YAML file's folder so `eai run` works from anywhere
    def path(self, p: str) -> str:
        if "://" in p or os.path.isabs(p) or not self.source_file:
            return p
        return str((Path(self.source_file).parent / p).resolve())

    @property
    def state_path(self) -> Path:
        return Path(self.path(self.state_dir))

    def source(self, name: str):
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def silver_for(self, source: str, resource: str) -> SilverTable | None:
        for t in self.silver:
            if t.source == f"{source}.{resource}":
                return t
        return None


# --------------------------------------------------------------------------- loading
# Fields that can carry a credential keep their ${VAR} references when the YAML is loaded; they are
# resolved (``with_secrets``) only inside the process that uses them, so the config object that is
# shipped to Ray actors and tasks, logged or stored never holds the value.
SECRET_FIELDS = ("password", "token")  # whole-value references (SecretRef)
REFERENCE_FIELDS = ("headers", "params", "storage_options", "properties", "uri", "metadata_uri")


def _interpolate(node: Any, secret_keys=SECRET_FIELDS + REFERENCE_FIELDS) -> Any:
    """Expand ${VAR} in plain strings; secret fields and fields that can hold one keep their reference."""
    if isinstance(node, dict):
        return {k: (v if k in secret_keys else _interpolate(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v) for v in node]
    if isinstance(node, str) and "${" in node:
        def sub(m):
            val = os.environ.get(m.group(1), m.group(2))
            if val is None:
                raise ConfigError(f"environment variable {m.group(1)} is not set",
                                  expected=f"export {m.group(1)}=...")
            return val
        return _ENV_REF.sub(sub, node)
    return node


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("postgres", "mysql", "mariadb", "sqlite", "files", "rest"):
            continue  # discriminator tag pydantic inserts into the path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


# --------------------------------------------------------------------------- safe loading
MAX_CONFIG_BYTES = 1 << 20  # a pipeline file is a page or two; this is far beyond any real one
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000  # values once aliases are expanded: an alias bomb stops here, cheaply

_SECRET_NAME = re.compile(r"(^|[-_.])(auth\w*|token|secret\w*|password|passwd|pwd|api[-_]?key|apikey|"
                          r"access[-_]?key\w*|private[-_]?key|credentials?|cookie|session[-_]?token)"
                          r"($|[-_.])|^(key|sig|signature)$", re.I)
_URI_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/@]*)@")


def _yaml_shape(text: str, file: str) -> None:
    """Refuse oversized or deeply nested YAML before building it (the composer recurses)."""
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the file is larger than {MAX_CONFIG_BYTES >> 10} KiB", file=file,
                          expected="a pipeline YAML of normal size")
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                mark = event.start_mark
                raise ConfigError(f"nesting deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}",
                                  file=file, expected="a flatter document")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _expanded_size(data: Any, file: str) -> None:
    """Count the values the document stands for once aliases are expanded, without expanding them."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError("an alias refers to a value that contains it (a recursive YAML alias)",
                              file=file, expected="aliases of finished values only")
        active.add(key)
        children = node.items() if isinstance(node, dict) else enumerate(node)
        total = 1
        for _, child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise ConfigError(f"the document expands to more than {MAX_YAML_NODES:,} values through its "
                                  "aliases", file=file, expected="fewer or smaller YAML aliases")
        active.discard(key)
        sizes[key] = total
        return total

    size(data)


def _refuse_literal_secrets(data: dict, file: str) -> None:
    """Fields that can carry a credential must hold a reference (``${VAR}`` or ``file:/path``)."""
    def is_ref(v: Any) -> bool:
        return isinstance(v, str) and (v.startswith("file:") or bool(_ENV_REF.fullmatch(v.strip())))

    def named(mapping: Any, where: str) -> None:
        for k, v in (mapping or {}).items() if isinstance(mapping, dict) else ():
            if _SECRET_NAME.search(str(k)) and v not in (None, "") and not is_ref(v):
                raise ConfigError(f"'{k}' looks like a credential but holds a literal value", file=file,
                                  field=f"{where}.{k}", expected="a reference: ${ENV_VAR} or file:/path/to/secret")

    def uri(value: Any, where: str) -> None:
        m = _URI_USERINFO.match(value) if isinstance(value, str) else None
        if m and ":" in m.group(1):
            password = m.group(1).split(":", 1)[1]
            if password and not _ENV_REF.fullmatch(password):
                raise ConfigError("the URI holds a literal password", file=file, field=where,
                                  expected="user:${ENV_VAR}@host (the password as a reference)")

    for i, src in enumerate(data.get("sources") or []):
        if not isinstance(src, dict):
            continue
        named(src.get("headers"), f"sources[{i}].headers")
        named(src.get("storage_options"), f"sources[{i}].storage_options")
        for key in ("base_url", "path"):
            uri(src.get(key), f"sources[{i}].{key}")
        for j, res in enumerate(src.get("resources") or []):
            if isinstance(res, dict):
                named(res.get("params"), f"sources[{i}].resources[{j}].params")
    catalog = data.get("catalog")
    if not isinstance(catalog, dict):
        catalog = {}
    uri(catalog.get("uri"), "catalog.uri")
    uri(catalog.get("warehouse"), "catalog.warehouse")
    named(catalog.get("properties"), "catalog.properties")
    uri(data.get("metadata_uri"), "metadata_uri")


MAX_PROBLEMS_SHOWN = 10


def _problem(err: ErrorDetails) -> tuple[str, str]:
    """(field path, message) for one pydantic error, with a suggestion for a misspelled key."""
    msg = err["msg"].removeprefix("Value error, ")
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        loc = loc[:-1]
        msg = f"unknown key '{key}'"
        close = difflib.get_close_matches(key, [k for k in _known_keys() if k != key], n=1, cutoff=0.75)
        msg += f"; did you mean '{close[0]}'?" if close else "; remove it or check its spelling"
    elif err["type"] == "missing":
        msg = "is required"
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        shown = err["input"] if not any(k in str(loc) for k in ("password", "token")) else "***"
        msg += f" (got {shown!r})"
    return _field_path(loc), msg


def _known_keys() -> list[str]:
    """Every key any pipeline model accepts (aliases included), for spelling suggestions."""
    keys: set[str] = set()
    for model in Model.__subclasses__() + [m for c in Model.__subclasses__() for m in c.__subclasses__()]:
        for name, f in model.model_fields.items():
            keys.add(f.alias or name)
    return sorted(keys)


def parse_pipeline(data: Any, *, file: str = "<pipeline>") -> PipelineConfig:
    """Validate an already-loaded mapping; errors name file, field and expectation."""
    if not isinstance(data, dict):
        raise ConfigError("the pipeline must be a YAML mapping", file=file,
                          expected="keys such as name, sources, silver, gold")
    _expanded_size(data, file)
    _refuse_literal_secrets(data, file)
    try:
        data = _interpolate(data)
        cfg = PipelineConfig.model_validate({**data, "source_file": None})
    except ValidationError as exc:
        # an unknown key first: it usually explains a "required" one (`source:` for `sources:`)
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        problems = [_problem(e) for e in errors]
        field, msg = problems[0]
        if len(problems) > 1:
            shown = problems[1:MAX_PROBLEMS_SHOWN]
            msg += "".join(f"\n  also field '{f}': {m}" for f, m in shown)
            if len(problems) > MAX_PROBLEMS_SHOWN:
                msg += f"\n  and {len(problems) - MAX_PROBLEMS_SHOWN} more"
        raise ConfigError(msg, file=file, field=field) from None
    cfg.source_file = file if file != "<pipeline>" else None
    if cfg.source_file:  # a local folder or database file, like state_dir, is relative to the YAML
        for src in cfg.sources:
            if isinstance(src, (FileSource, SQLiteSource)) and src.path != ":memory:":
                src.path = cfg.path(src.path)
    _refuse_state_in_job_copy(cfg, file)
    return cfg


# Ray unpacks a job's --working-dir into a per-job folder under the session's runtime resources
_JOB_COPY = re.compile(r"/runtime_resources/working_dir_files/[^/]+/")


def _local_path(uri: str) -> str | None:
    """The local filesystem path a state URI names (sqlite:///x, file:///x, a plain path), else None."""
    if uri.startswith("sqlite:///"):
        return uri[len("sqlite:///"):]
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def _refuse_state_in_job_copy(cfg: PipelineConfig, file: str) -> None:
    """A job submitted with --working-dir reads its YAML from a temporary copy of that folder; a
    relative state_dir (or catalog/metadata path) would then put the tables inside the copy,
    invisible from the user's shell and lost when the cluster stops."""
    if not cfg.source_file or not _JOB_COPY.search(cfg.source_file):
        return
    places: list[tuple[str, str, str | None]] = [("state_dir", cfg.state_dir, None)]
    if cfg.catalog.uri:
        places.append(("catalog.uri", cfg.catalog.uri, _local_path(cfg.catalog.uri)))
    if cfg.catalog.warehouse:
        places.append(("catalog.warehouse", cfg.catalog.warehouse, _local_path(cfg.catalog.warehouse)))
    if cfg.metadata_uri:
        places.append(("metadata_uri", cfg.metadata_uri, _local_path(cfg.metadata_uri)))
    shared = bool(cfg.catalog.uri and cfg.catalog.warehouse and cfg.metadata_uri)
    for field, raw, local in places:
        if field == "state_dir":
            if shared:
                continue  # every table and record lives elsewhere; state_dir holds only scratch
            local = str(cfg.state_path)
        if local is not None and _JOB_COPY.search(cfg.path(local) if not os.path.isabs(local) else local):
            raise ConfigError(
                f"'{raw}' resolves inside this Ray job's temporary copy of its working directory "
                f"({cfg.path(local) if not os.path.isabs(local) else local}): the tables would be invisible "
                "outside the job and lost when the cluster stops", file=file, field=field,
                expected="an absolute path every node can reach (or object storage / PostgreSQL for the "
                         "catalog and metadata), or submit the job without --working-dir and pass the "
                         "pipeline's absolute path")


def load_pipeline(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a pipeline YAML file."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", file=path, expected="a path to a pipeline YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", file=path) from None
    try:
        _yaml_shape(text, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=path) from None
    return parse_pipeline(data, file=os.path.abspath(path))
