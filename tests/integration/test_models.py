"""The embedding model and the LLM backends on the real offline models (loaded once per process), moved
from tests/unit/test_models.py: the unit tier loads no model."""
import numpy as np
import pytest

from eai_ray.errors import ConfigError, LLMAuthError, LLMTimeout
from eai_ray.processing.models.embedder import Embedder, cosine
from eai_ray.processing.models.llm import LLM, USAGE, Completion, LocalGGUF, OpenAICompatible, llm_from_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def embedder():
    return Embedder.load("cpu")


@pytest.fixture(scope="session")
def gguf():
    # its own instance, so the test knows the key of xllamacpp's OpenAI-compatible listener
    return LocalGGUF.load(http_api_key="test-key-for-the-listener", n_parallel=2)


# --------------------------------------------------------------------------- embedder
def test_embeddings_are_unit_float32_rows(embedder):
    v = embedder.encode(["order date", "customer name", ""])
    assert v.shape == (3, 384) and v.dtype == np.float32 and embedder.dim == 384
    assert np.allclose(np.linalg.norm(v[:2], axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_embeddings_carry_meaning(embedder):
    a, b, c = embedder.encode(["the car would not start", "my automobile broke down", "a recipe for banana bread"])
    assert cosine(a[None], b[None])[0, 0] > cosine(a[None], c[None])[0, 0] + 0.2


def test_embedder_is_cached_per_process_and_rejects_a_bare_string(embedder):
    assert Embedder.load("cpu") is embedder
    with pytest.raises(TypeError):
        embedder.encode("one string")


def test_batching_does_not_change_embeddings(embedder):
    texts = [f"sentence number {i} about invoices" for i in range(20)]
    assert np.allclose(embedder.encode(texts, batch_size=3), embedder.encode(texts, batch_size=64), atol=1e-5)


# --------------------------------------------------------------------------- local GGUF
def test_local_gguf_completes_with_token_counts(gguf):
    assert isinstance(gguf, LLM)
    before = USAGE.snapshot().get(gguf.model, {}).get("calls", 0)
    c = gguf.complete("What is the capital of France? Answer with one word.", max_tokens=8, timeout=30)
    assert isinstance(c, Completion) and c.text.strip()
    assert c.prompt_tokens > 5 and 0 < c.completion_tokens <= 8 and c.seconds > 0
    assert c.model == "SmolLM2-135M-Instruct-Q4_1"
    assert USAGE.snapshot()[gguf.model]["calls"] == before + 1


def test_local_gguf_is_deterministic_at_temperature_zero_and_honours_max_tokens(gguf):
    p = "Write a sentence about the sea."
    a = gguf.complete(p, max_tokens=12, timeout=30)
    b = gguf.complete(p, max_tokens=12, timeout=30)
    assert a.text == b.text
    assert a.completion_tokens <= 12 and a.finish_reason == "length"


def test_local_gguf_stop_sequence(gguf):
    c = gguf.complete("Count from 1 to 10, separated by commas.", max_tokens=40, stop=["5"], timeout=30)
    assert "5" not in c.text and "6" not in c.text


def test_local_gguf_timeout_is_typed(gguf):
    with pytest.raises(LLMTimeout) as ei:
        gguf.complete("Tell a very long story about dragons and castles.", max_tokens=2000, timeout=0.05)
    assert ei.value.transient


# --------------------------------------------------------------------------- OpenAI-compatible
def test_openai_compatible_against_a_real_endpoint(gguf):
    # xllamacpp serves the OpenAI protocol itself: a real endpoint with a real key check
    api = OpenAICompatible(gguf.listening_url, model="smollm2", api_key="test-key-for-the-listener")
    c = api.complete("Say hello.", max_tokens=6, timeout=30, system="You are terse.")
    assert c.text and c.prompt_tokens > 0 and c.completion_tokens > 0
    assert "test-key" not in repr(api)


def test_openai_compatible_wrong_key_is_an_auth_error(gguf):
    api = OpenAICompatible(gguf.listening_url, model="smollm2", api_key="wrong")
    with pytest.raises(LLMAuthError) as ei:
        api.complete("hi", max_tokens=4, timeout=10)
    assert not ei.value.transient and ei.value.context["status"] == 401


def test_openai_compatible_from_env(monkeypatch, gguf):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("EAI_LLM_URL", raising=False)
    with pytest.raises(ConfigError, match="EAI_LLM_URL"):
        llm_from_config("openai")
    monkeypatch.setenv("EAI_LLM_URL", gguf.listening_url)
    monkeypatch.setenv("EAI_LLM_API_KEY", "test-key-for-the-listener")
    monkeypatch.setenv("EAI_LLM_MODEL", "smollm2")
    llm = llm_from_config("openai")
    assert isinstance(llm, OpenAICompatible) and llm.complete("Hi", max_tokens=3, timeout=30).completion_tokens > 0
