"""The LLM enricher on the real offline models: classification of labelled examples
(tests/fixtures/enrich_classify.yaml), extraction, summaries; moved from tests/unit/test_enrich.py (the
unit tier loads no model)."""
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from eai_ray.config import EnrichSpec
from eai_ray.processing.enrich import EnrichStats, LocalClient, classify_by_embedding, enrich_table

pytestmark = pytest.mark.integration

GOLDEN = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "enrich_classify.yaml").read_text())


@pytest.fixture(scope="session")
def client():
    return LocalClient()  # models are cached per process: loaded once for the whole session


def test_golden_classification_by_label_embeddings(client):
    texts = [e["text"] for e in GOLDEN["examples"]]
    labels, conf = classify_by_embedding(texts, GOLDEN["labels"], client.embed)
    assert labels == [e["label"] for e in GOLDEN["examples"]]
    assert all(0.25 <= c <= 1.0 for c in conf)


def test_enrich_table_classify_adds_label_and_confidence(client):
    t = pa.table({"id": [1, 2, 3], "msg": [GOLDEN["examples"][0]["text"], None, GOLDEN["examples"][2]["text"]]})
    spec = EnrichSpec(column="msg", task="classify", labels=GOLDEN["labels"])
    stats = EnrichStats()
    out = enrich_table(t, [spec], client, stats)
    assert out.column_names == ["id", "msg", "msg_classify", "msg_classify_confidence"]
    assert out.column("msg_classify").to_pylist() == ["complaint", None, "praise"]
    assert out.column("msg_classify_confidence").to_pylist()[1] is None
    assert stats.llm_calls == 0  # the offline default needs no LLM


def test_extract_and_summarize_with_the_embedded_llm(client):
    texts = ["Apple and Microsoft reported strong quarterly earnings on Tuesday.",
             "I flew from Paris to Rome last week."]
    t = pa.table({"body": texts})
    specs = [EnrichSpec(column="body", task="extract", entity="company or city names", output="names"),
             EnrichSpec(column="body", task="summarize", max_tokens=32)]
    stats = EnrichStats()
    out = enrich_table(t, specs, client, stats)
    for text, names in zip(texts, out.column("names").to_pylist()):
        for name in (names or "").split("; "):
            assert name.lower() in text.lower()  # grounded: nothing the text does not say
    summaries = out.column("body_summarize").to_pylist()
    assert all(s and len(s) < 400 for s in summaries)
    assert stats.llm_calls == 4 and stats.prompt_tokens > 0 and stats.completion_tokens > 0


def test_llm_classification_parses_a_label(client):
    t = pa.table({"m": ["I want a refund for the double charge on my card."]})
    spec = EnrichSpec(column="m", task="classify", method="llm", labels=["billing", "shipping"], max_tokens=8)
    out = enrich_table(t, [spec], client)
    assert out.column("m_classify").to_pylist()[0] in ("billing", "shipping", None)
