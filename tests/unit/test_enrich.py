"""The LLM enricher without the models: failed calls, parsers, the pipeline YAML. On the real offline
models: tests/integration/test_enrich_models.py."""
import socket

import pyarrow as pa
import pytest

from eai_ray.config import EnrichSpec, parse_pipeline
from eai_ray.errors import ConfigError
from eai_ray.processing.enrich import EnrichStats, LocalClient, enrich_table, output_columns, parse_entities, parse_label
from eai_ray.processing.models.llm import OpenAICompatible


def test_failed_llm_calls_give_null_and_are_counted():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    down = OpenAICompatible(f"http://127.0.0.1:{port}/v1", model="down", max_retries=0)
    out_stats = EnrichStats()
    t = pa.table({"b": ["some text", "more text"]})
    out = enrich_table(t, [EnrichSpec(column="b", task="summarize")], LocalClient(llm=down), out_stats)
    assert out.column("b_summarize").to_pylist() == [None, None]
    assert out_stats.errors == {"LLMUnavailable": 2}


def test_parsers_keep_only_grounded_entities_and_known_labels():
    text = "Maria moved from Berlin to Madrid to work for Siemens."
    assert parse_entities("Berlin, Madrid, Siemens, Tokyo", text) == ["Berlin", "Madrid", "Siemens"]
    assert parse_entities("none", text) == []
    assert parse_entities(text, text) == []  # echoing the input is not an entity
    assert parse_label("The label is: Billing.", ["shipping", "billing"]) == "billing"
    assert parse_label("no idea", ["a1", "b2"]) is None


def test_enrich_spec_in_the_pipeline_yaml():
    base = {"name": "p", "sources": [{"kind": "sqlite", "name": "s", "path": "x.db", "tables": [{"name": "t"}]}]}
    cfg = parse_pipeline({**base, "silver": [{"name": "t", "source": "s.t", "enrich": [
        {"column": "body", "task": "classify", "labels": ["a", "b"]},
        {"column": "body", "task": "extract", "entity": "cities", "output": "cities"}]}]})
    specs = cfg.silver[0].enrich
    assert [s.output for s in specs] == ["body_classify", "cities"]
    assert output_columns(specs) == [("body", "body_classify"), ("body", "body_classify_confidence"),
                                     ("body", "cities")]
    with pytest.raises(ConfigError, match="labels"):
        parse_pipeline({**base, "silver": [{"name": "t", "source": "s.t",
                                            "enrich": [{"column": "b", "task": "classify"}]}]})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_pipeline({**base, "silver": [{"name": "t", "source": "s.t",
                                            "enrich": [{"column": "b", "task": "summarize", "colour": 1}]}]})
