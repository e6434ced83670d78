"""The LLM backends without the models: errors, retries, backend selection, the vLLM app. The real
offline models are tested in tests/integration/test_models.py."""
import socket
from pathlib import Path

import pytest
import yaml

from eai_ray.errors import ConfigError, LLMAuthError, LLMUnavailable
from eai_ray.processing.models.llm import LocalGGUF, OpenAICompatible, llm_from_config, vllm_serve_config

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------- OpenAI-compatible
def test_openai_compatible_unreachable_is_transient():
    api = OpenAICompatible(f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=1, backoff=0.01)
    with pytest.raises(LLMUnavailable) as ei:
        api.complete("hi", max_tokens=4, timeout=5)
    assert ei.value.transient


class _Answer:
    def __init__(self, status: int, body=None) -> None:
        self.status_code, self._body, self.reason = status, body if body is not None else {}, "reason"

    def json(self):
        return self._body


class _Endpoint:
    """Stands in for the requests session: answers in turn, records each POST."""

    def __init__(self, *answers: _Answer) -> None:
        self.answers, self.posts = list(answers), 0

    def post(self, url, **kw):
        self.posts += 1
        return self.answers.pop(0)


def test_openai_compatible_retries_transient_answers_under_the_llm_policy():
    ok = _Answer(200, {"choices": [{"message": {"content": "hi"}}], "model": "m",
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    slept = []
    api = OpenAICompatible("http://llm.invalid/v1", model="retry-test", sleep=slept.append)
    api._session = _Endpoint(_Answer(503, {"error": {"message": "busy"}}), _Answer(429), ok)
    assert api.complete("x", timeout=30).text == "hi"
    assert api._session.posts == 3 and len(slept) == 2 and slept[0] <= api.backoff

    api._session = _Endpoint(*(_Answer(500) for _ in range(3)))  # attempts run out: the last error
    with pytest.raises(LLMUnavailable) as ei:
        api.complete("x", timeout=30)
    assert api._session.posts == 3 and ei.value.context["status"] == 500

    api._session = _Endpoint(_Answer(401), ok)  # a wrong key is not retried
    with pytest.raises(LLMAuthError):
        api.complete("x", timeout=30)
    assert api._session.posts == 1


# --------------------------------------------------------------------------- selection, vLLM
def test_backend_selection(monkeypatch):
    monkeypatch.setenv("EAI_LLM_BACKEND", "none")
    assert llm_from_config() is None
    with pytest.raises(ConfigError, match="unknown LLM backend"):
        llm_from_config("gpt5")
    monkeypatch.setenv("EAI_LLM_BACKEND", "local")
    monkeypatch.setattr(LocalGGUF, "_ensure", lambda self: None)  # selected, not started (tests/integration)
    assert isinstance(llm_from_config(), LocalGGUF)


def test_vllm_app_runs_in_its_own_runtime_env():
    app = vllm_serve_config(accelerator_type="L4")
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    assert any(p.startswith("vllm==") for p in app["runtime_env"]["pip"])
    cfg = app["args"]["llm_configs"][0]
    assert cfg["accelerator_type"] == "L4" and cfg["model_loading_config"]["model_id"]
    shipped = yaml.safe_load((ROOT / "configs" / "serve_vllm.yaml").read_text())["applications"][0]
    assert shipped["import_path"] == app["import_path"] and shipped["runtime_env"] == app["runtime_env"]
    assert shipped["route_prefix"] == app["route_prefix"]
