"""Pipeline YAML validation: every bad input names the file, the field and the fix."""
import json

import pytest

from eai_ray.config import load_pipeline, parse_pipeline
from eai_ray.errors import ConfigError, SecretError

GOOD = """
name: shop
sources:
  - kind: postgres
    name: pg
    database: shop
    user: app
    password: ${PG_PASSWORD}
    tables:
      - {name: orders, primary_key: [id], incremental: {cursor: updated_at}}
silver:
  - name: orders
    source: pg.orders
    primary_key: [id]
    columns:
      id: {type: int64, nullable: false}
      amount: {type: "decimal(12,2)"}
    rules:
      - {column: amount, min: 0, action: quarantine}
"""


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_pipeline_parses(tmp_path):
    cfg = load_pipeline(write(tmp_path, GOOD))
    assert cfg.sources[0].tables[0].table == "orders"
    assert cfg.silver[0].rules[0].name == "amount_range"
    assert str(cfg.sources[0].password) == "${PG_PASSWORD}"


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "name: x\nsources: [\n  - kind: postgres\n")
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    assert str(p) in str(e.value) and "line" in str(e.value)


@pytest.mark.parametrize("mutation, field, fragment", [
    (("    user: app", "    user: app\n    pasword: x"), "sources[0]", "unknown key 'pasword'"),
    (("database: shop", "database: shop\n    port: abc"), "sources[0].port", "valid integer"),
    (("{type: int64, nullable: false}", "{type: int46}"), "silver[0].columns.id.type", "unknown type"),
    (("source: pg.orders", "source: pg.missing"), "(top level)", "matches no source resource"),
    (("kind: postgres", "kind: oracle"), "sources[0]", "does not match any of the expected tags"),
    (("action: quarantine", "action: explode"), "silver[0].rules[0].action", "'warn', 'quarantine' or 'fail'"),
])
def test_bad_fields_are_named(tmp_path, mutation, field, fragment):
    p = write(tmp_path, GOOD.replace(*mutation))
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    msg = str(e.value)
    assert str(p) in msg and f"field '{field}'" in msg and fragment in msg, msg


def test_literal_password_is_refused_and_not_echoed(tmp_path):
    p = write(tmp_path, GOOD.replace("${PG_PASSWORD}", "hunter2-secret"))
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    assert "hunter2-secret" not in str(e.value)
    assert "sources[0].password" in str(e.value) and "${ENV_VAR}" in str(e.value)


def test_secret_resolution(monkeypatch, tmp_path):
    cfg = load_pipeline(write(tmp_path, GOOD))
    monkeypatch.delenv("PG_PASSWORD", raising=False)
    with pytest.raises(SecretError) as e:
        cfg.sources[0].password.resolve()
    assert "PG_PASSWORD" in str(e.value)
    monkeypatch.setenv("PG_PASSWORD", "s3cret")
    assert cfg.sources[0].password.resolve() == "s3cret"
    assert "s3cret" not in repr(cfg)
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    cfg2 = load_pipeline(write(tmp_path, GOOD.replace("${PG_PASSWORD}", f"file:{f}"), "q.yaml"))
    assert cfg2.sources[0].password.resolve() == "from-file"


def test_rule_needs_exactly_one_check():
    data = {"name": "x", "sources": [{"kind": "sqlite", "name": "s", "path": "a.db", "tables": [{"name": "t"}]}],
            "silver": [{"name": "t", "source": "s.t", "rules": [{"column": "a", "regex": "x", "min": 1}]}]}
    with pytest.raises(ConfigError, match="exactly one check"):
        parse_pipeline(data, file="inline.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_pipeline("/nonexistent/pipeline.yaml")


def test_env_interpolation_in_plain_fields(monkeypatch):
    monkeypatch.setenv("DB_HOST", "db.internal")
    data = {"name": "x", "sources": [{"kind": "postgres", "name": "pg", "host": "${DB_HOST}", "database": "d",
                                      "tables": [{"name": "t"}]}]}
    assert parse_pipeline(data).sources[0].host == "db.internal"


def test_driver_resolved_secrets_reach_workers_without_their_env(monkeypatch):
    from eai_ray.config import provide_secrets, resolvable_secrets
    data = {"name": "x", "sources": [{"kind": "postgres", "name": "pg", "database": "d",
                                      "password": "${ONLY_ON_DRIVER}", "tables": [{"name": "t"}]}]}
    cfg = parse_pipeline(data)
    monkeypatch.setenv("ONLY_ON_DRIVER", "pw1")
    shipped = resolvable_secrets(cfg.sources[0])
    assert shipped == {"${ONLY_ON_DRIVER}": "pw1"}
    monkeypatch.delenv("ONLY_ON_DRIVER")
    provide_secrets(shipped)  # what an actor does with what the driver sent
    assert cfg.sources[0].password.resolve() == "pw1"


# ---------------------------------------------------------------------- whole schemas and out-of-range values
def _pg(**over):
    return parse_pipeline({"name": "x", "sources": [{"kind": "postgres", "name": "pg", "database": "d", **over}]}
                          ).sources[0]


def test_table_entries_may_be_plain_strings_and_a_wildcard():
    src = _pg(tables=["orders", "*", {"name": "recent", "query": "SELECT 1"}])
    assert [(t.name, t.table, t.is_wildcard) for t in src.tables] == [
        ("orders", "orders", False), ("*", None, True), ("recent", None, False)]
    assert src.on_out_of_range == "quarantine" and src.exclude == []


def test_schema_without_tables_means_every_table():
    from eai_ray.config import has_wildcard

    src = _pg(schema="sales data")
    assert src.schema_ == "sales data" and [t.name for t in src.tables] == ["*"] and has_wildcard(src)
    with pytest.raises(ConfigError, match="tables"):
        _pg()  # neither schema nor tables: still an error naming the field


def test_wildcard_takes_no_table_settings():
    with pytest.raises(ConfigError) as e:
        _pg(tables=[{"name": "*", "primary_key": ["id"]}])
    assert "sources[0].tables[0]" in str(e.value) and "list a table by name" in str(e.value)
    assert _pg(tables=[{"name": "*", "on_out_of_range": "clamp"}]).tables[0].on_out_of_range == "clamp"


@pytest.mark.parametrize("where", ["source", "table"])
def test_on_out_of_range_is_validated(where):
    bad = {"on_out_of_range": "ignore"}
    over = bad if where == "source" else {"tables": [{"name": "t", **bad}]}
    with pytest.raises(ConfigError) as e:
        _pg(**({"tables": ["t"]} | over))
    assert "on_out_of_range" in str(e.value) and "'quarantine', 'clamp' or 'null'" in str(e.value)


def test_expand_tables_keeps_explicit_entries_and_applies_exclude():
    from eai_ray.config import expand_tables, has_wildcard

    src = _pg(tables=[{"name": "o", "table": "orders", "incremental": {"cursor": "at"}}, "*", "customers"],
              schema="shop", exclude=["tmp_*"], on_out_of_range="clamp")
    names = ["customers", "orders", "tmp_x", "line.items", "shop_view"]
    out = expand_tables(src, names)
    assert not has_wildcard(out) and src.tables[1].is_wildcard  # a copy; the source is left as it was
    assert [t.name for t in out.tables] == ["o", "line.items", "shop_view", "customers"]
    assert out.tables[0].incremental.cursor == "at"  # explicit settings kept
    dotted = out.tables[1]
    assert (dotted.table, dotted.schema_, dotted.on_out_of_range) == ("line.items", "shop", None)
    assert expand_tables(out, ["anything"]) is out  # nothing to expand
    assert out.on_out_of_range == "clamp"


def test_expand_tables_for_mysql_and_sqlite():
    from eai_ray.config import MySQLSource, SQLiteSource, expand_tables

    my = MySQLSource(kind="mariadb", name="m", database="crm", tables=["*"], exclude=["audit_*"])
    assert [(t.name, t.schema_) for t in expand_tables(my, ["audit_log", "contacts"]).tables] == [("contacts", "crm")]
    lite = SQLiteSource(kind="sqlite", name="l", path="a.db", tables=["*"])
    assert [(t.name, t.table) for t in expand_tables(lite, ["a b", "c"]).tables] == [("a b", "a b"), ("c", "c")]


# ---------------------------------------------------------------------- safe loading and secrets
def _write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines += ["name: p", "sources: [{kind: rest, name: r, base_url: 'http://h', resources: [{name: x, path: /x, "
              "params: {p: *a8}}]}]"]
    with pytest.raises(ConfigError, match="expands to more than"):
        load_pipeline(_write(tmp_path, "\n".join(lines)))


def test_deep_and_recursive_yaml_give_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nesting deeper"):
        load_pipeline(_write(tmp_path, "name: p\nx: " + "[" * 5000 + "]" * 5000))
    with pytest.raises(ConfigError, match="recursive"):
        load_pipeline(_write(tmp_path, "name: p\nsources: &s [*s]\n"))


def test_literal_secrets_are_refused_where_credentials_go(tmp_path):
    base = {"name": "p", "sources": [{"kind": "rest", "name": "r", "base_url": "https://api.x",
                                      "resources": [{"name": "a", "path": "/a"}]}]}
    cases = [
        (("sources", 0, "headers"), {"X-API-Key": "abc123"}, "sources[0].headers.X-API-Key"),
        (("sources", 0, "resources", 0, "params"), {"api_key": "abc123"}, "sources[0].resources[0].params.api_key"),
    ]
    for path, value, field in cases:
        data = json.loads(json.dumps(base))
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        with pytest.raises(ConfigError) as err:
            parse_pipeline(data)
        assert err.value.context.get("field") == field and "abc123" not in str(err.value)
    data = json.loads(json.dumps(base))
    data["metadata_uri"] = "postgresql://eai:hunter22@db/eai"
    with pytest.raises(ConfigError, match="literal password") as err:
        parse_pipeline(data)
    assert "hunter22" not in str(err.value)
    data["metadata_uri"] = "postgresql://eai:${META_PW}@db/eai"
    data["sources"][0]["headers"] = {"X-API-Key": "${EAI_T_KEY:-k}", "X-Tenant": "acme"}
    parse_pipeline({**data, "metadata_uri": "postgresql://eai:${META_PW:-x}@db/eai"})


def test_secret_values_are_trimmed_refused_with_inner_breaks_and_redacted(monkeypatch):
    from eai_ray.config import SecretRef
    from eai_ray.errors import SecretError, SourceError
    from eai_ray.redact import redact

    monkeypatch.setenv("EAI_T_TOKEN", "tok-0123456789\n")
    assert SecretRef("${EAI_T_TOKEN}").resolve() == "tok-0123456789"
    err = SourceError("server said: bad token tok-0123456789", token="tok-0123456789")
    assert "tok-0123456789" not in str(err) and "tok-0123456789" not in json.dumps(err.to_dict())
    assert redact("x tok-0123456789 y") == "x *** y"
    monkeypatch.setenv("EAI_T_TOKEN", "tok-01\n23456789")
    with pytest.raises(SecretError, match="line break") as e:
        SecretRef("${EAI_T_TOKEN}").resolve()
    assert "23456789" not in str(e.value)


def test_every_problem_is_listed_with_spelling_suggestions():
    with pytest.raises(ConfigError) as err:
        parse_pipeline({"name": "p", "source": [], "silver": [{"name": "t", "source": "s.a", "primary_keys": ["id"]}]})
    text = str(err.value)
    assert "unknown key 'source'; did you mean 'sources'?" in text
    assert "unknown key 'primary_keys'; did you mean 'primary_key'?" in text
    assert "field 'sources': is required" in text


def test_replication_slot_names_follow_the_servers_rule():
    base = {"name": "p", "sources": [{"kind": "postgres", "name": "pg", "database": "d", "tables": ["t"],
                                      "cdc": {"slot": 'bad"slot; drop'}}]}
    with pytest.raises(ConfigError, match="cdc.slot"):
        parse_pipeline(base)
    base["sources"][0]["cdc"]["slot"] = "eai_ok_slot_1"
    assert parse_pipeline(base).sources[0].cdc.slot == "eai_ok_slot_1"


def test_state_inside_a_ray_jobs_working_dir_copy_is_refused(tmp_path):
    """`ray job submit --working-dir .` runs the YAML from a temporary copy: relative state would vanish."""
    copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc" / "configs"
    copy.mkdir(parents=True)
    body = "name: p\nstate_dir: {state}\nsources:\n  - {{kind: files, name: d, path: data, resources: [{{name: a, pattern: '*.csv'}}]}}\n"
    rel = copy / "rel.yaml"
    rel.write_text(body.format(state="../.eai/p"))
    with pytest.raises(ConfigError) as err:
        load_pipeline(rel)
    msg = str(err.value)
    assert "field 'state_dir'" in msg and "temporary copy" in msg and str(rel) in msg
    absolute = copy / "abs.yaml"
    absolute.write_text(body.format(state=tmp_path / "shared-state"))
    assert load_pipeline(absolute).state_path == tmp_path / "shared-state"
    normal = tmp_path / "plain.yaml"  # outside a job copy, relative state is fine
    normal.write_text(body.format(state=".eai"))
    assert load_pipeline(normal).state_path == tmp_path / ".eai"


def test_local_source_paths_resolve_against_the_yaml_folder(tmp_path):
    """Like state_dir: `eai run` of the same YAML reads the same folder from any working directory."""
    (tmp_path / "cfg").mkdir()
    p = tmp_path / "cfg" / "p.yaml"
    p.write_text("name: p\nsources:\n"
                 "  - {kind: files, name: d, path: ../data, resources: [{name: a, pattern: '*.csv'}]}\n"
                 "  - {kind: sqlite, name: s, path: shop.db, tables: [{name: t}]}\n"
                 "  - {kind: files, name: b, path: 's3://bucket/x', resources: [{name: a, pattern: '*.csv'}]}\n")
    cfg = load_pipeline(p)
    assert cfg.source("d").path == str(tmp_path / "data")
    assert cfg.source("s").path == str(tmp_path / "cfg" / "shop.db")
    assert cfg.source("b").path == "s3://bucket/x"
