"""The one settings tree: EAI_* variables parsed by pydantic-settings, errors naming the variable."""
import pytest

from eai_ray.errors import ConfigError
from eai_ray.settings import LlmSettings, llm_settings, read, settings


def test_values_come_from_the_environment_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("EAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("EAI_RAY_DASHBOARD", "0")
    monkeypatch.setenv("EAI_ENRICH_TIMEOUT", "7.5")
    s = settings()
    assert s.cache_dir == tmp_path and s.ray_dashboard is False and s.enrich_timeout == 7.5
    monkeypatch.setenv("EAI_RAY_DASHBOARD", "1")
    assert settings().ray_dashboard is True  # read again: a changed environment is seen


def test_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("EAI_ENRICH_VIA", "sometimes")
    with pytest.raises(ConfigError, match="'EAI_ENRICH_VIA'") as err:
        settings()
    assert "sometimes" in str(err.value)


def test_llm_settings_fall_back_to_the_openai_variables(monkeypatch):
    for name in ("EAI_LLM_URL", "EAI_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://llm.local/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k-openai")
    s = llm_settings()
    assert s.url == "http://llm.local/v1" and s.api_key.get_secret_value() == "k-openai"
    assert "k-openai" not in repr(s)  # a secret never prints
    monkeypatch.setenv("EAI_LLM_URL", "http://ours/v1")
    assert llm_settings().url == "http://ours/v1"  # ours wins
    assert read(LlmSettings, model="m").model == "m"  # explicit values win over the environment
