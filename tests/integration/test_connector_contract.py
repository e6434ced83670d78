"""The connector contract: every connector family passes the same checks.

Each case is a fixture ``case_<name>`` (a ``ContractCase``) from
``cases_files_rest.py`` or ``cases_db.py``; its resource ``people`` holds
``people_rows(1, 200)``.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import BaseModel

from eai_ray.config import SecretRef
from eai_ray.errors import AuthenticationFailed, EaiError, SourceNotFound, SourceUnavailable
from eai_ray.ingestion.base import Batch, Connector, DiscoveredSchema, SupportsPartitioning, merge_checkpoints
from tests.integration.contract_data import people_rows

CASES = ["files_csv", "files_jsonl", "files_parquet", "rest", "sqlite", "postgres", "mysql"]


@pytest.fixture(params=CASES)
def case(request):
    # every family has its case fixture (tests/integration/cases_*.py): a missing one is an error, not a skip
    return request.getfixturevalue(f"case_{request.param}")


@pytest.fixture
def conn(case):
    c = case.make()
    yield c
    c.close()


def read_all(conn, *, checkpoint=None, partition=None) -> tuple[list[int], dict[str, Any] | None]:
    """Sorted ids of one read and the checkpoint merged over its batches."""
    ids: list[int] = []
    merged = checkpoint
    for batch in conn.read("people", checkpoint=checkpoint, partition=partition, batch_rows=64):
        assert isinstance(batch, Batch) and isinstance(batch.table, pa.Table)
        merged = merge_checkpoints(merged, batch.checkpoint)
        if batch.table.num_rows:
            ids.extend(pc.cast(batch.table.column("id"), pa.int64()).to_pylist())
    return sorted(ids), merged


def secrets_of(conn) -> list[str]:
    """Resolved values of every SecretRef in the connector's config objects."""
    found: list[str] = []

    def walk(obj, depth=0):
        if depth > 5:
            return
        if isinstance(obj, SecretRef):
            try:
                found.append(obj.resolve())
            except EaiError:
                pass
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name, None), depth + 1)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item, depth + 1)

    for value in vars(conn).values():
        walk(value)
    return [s for s in found if s]


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return str(t)


def test_is_a_connector_and_check_passes(conn):
    assert isinstance(conn, Connector)
    conn.check()


def test_resources_lists_people(conn):
    assert "people" in conn.resources()


def test_discover_people(conn):
    schema = conn.discover("people")
    assert isinstance(schema, DiscoveredSchema)
    kinds = {c.name: _kind(c.type) for c in schema.columns}
    assert {"id", "name", "score", "updated_at"} <= set(kinds), kinds
    assert kinds["id"] == "int"
    assert kinds["name"] == "string"
    assert kinds["score"] == "number"
    assert kinds["updated_at"] == "timestamp"
    assert all(0.0 <= c.confidence <= 1.0 and c.evidence for c in schema.columns)


def test_full_read_yields_every_row_once(conn):
    ids, _ = read_all(conn)
    assert ids == list(range(1, 201))


def test_incremental_reads(case, conn):
    _, checkpoint = read_all(conn)
    assert checkpoint, "a full read must return a checkpoint"
    again, checkpoint = read_all(conn, checkpoint=checkpoint)
    assert again == []
    case.add_rows(people_rows(201, 50))
    new, checkpoint = read_all(conn, checkpoint=checkpoint)
    assert new == list(range(201, 251))
    assert read_all(conn, checkpoint=checkpoint)[0] == []


def test_partitions_cover_the_full_read(conn):
    if not isinstance(conn, SupportsPartitioning):
        pytest.skip("connector does not split resources")
    full, _ = read_all(conn)
    parts = conn.plan("people", checkpoint=None, parallelism=3, batch_rows=64)
    if not parts:
        return  # [] means "read it whole", which the full read already covers
    assert len({p.label for p in parts}) == len(parts)
    union: list[int] = []
    for p in parts:
        union.extend(read_all(conn, partition=p)[0])
    assert sorted(union) == full
    assert len(union) == len(set(union))


def test_unknown_resource_is_source_not_found(conn):
    with pytest.raises(SourceNotFound):
        list(conn.read("nope"))
    with pytest.raises(SourceNotFound):
        conn.discover("nope")


def test_bad_auth_fails_without_leaking_the_secret(case):
    if case.make_bad_auth is None:
        pytest.skip(f"{case.kind} has no authentication")
    bad, good = case.make_bad_auth(), case.make()
    try:
        with pytest.raises(AuthenticationFailed) as info:
            bad.check()
        assert not info.value.transient
        shown = str(info.value) + str(info.value.to_dict())
        for secret in secrets_of(bad) + secrets_of(good):
            assert secret not in shown
    finally:
        bad.close()
        good.close()


def test_unreachable_source_is_transient(case):
    if case.make_unreachable is None:
        pytest.skip(f"{case.kind} has no network endpoint to lose")
    c = case.make_unreachable()
    try:
        with pytest.raises(SourceUnavailable) as info:
            c.check()
        assert info.value.transient
    finally:
        c.close()
