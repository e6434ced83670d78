"""Every example pipeline in configs/ validates (with its env references set)."""
from pathlib import Path

import pytest

from eai_ray.config import load_pipeline
from eai_ray.orchestration.dag import gold_order

# Serve configs (`applications:`) live next to the pipelines; tests/unit/test_serve_config.py checks them
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("serve"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path, monkeypatch):
    for var in ("PG_PASSWORD", "CATALOG_PW", "META_PW"):
        monkeypatch.setenv(var, "x")
    cfg = load_pipeline(path)
    gold_order(cfg.gold)
