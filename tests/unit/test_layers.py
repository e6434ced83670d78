"""Data flows one way: no layer of eai_ray imports a higher one (read from the source, not from docs).

    core (config, errors, types, coerce, redact, runtime)   imports no layer
    observability                                           core
    storage                                                 core, observability
    ingestion, processing                                   core, observability, storage
    orchestration                                           all four layers
    api (the HTTP app), demo                                the layers, never the face
    cli (the face: arguments, printing)                     everything, actors/ and serve_deployments/ too

actors/ and serve_deployments/ are imported only by the face (and serve_deployments by nothing in
the layers). Every import counts, function-local ones included: hiding one inside a function does
not make the dependency go away.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("observability", "storage", "ingestion", "processing", "orchestration")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "observability": set(),
    "storage": {"observability"},
    "ingestion": {"observability", "storage"},
    "processing": {"observability", "storage"},
    "orchestration": set(LAYERS),
    "api": set(LAYERS),
    "demo": set(LAYERS),
}
FACE = "cli"
OUTSIDE = ("actors", "serve_deployments")


def _group(path: Path, pkg: Path) -> str:
    """The layer a module of eai_ray belongs to."""
    first = path.relative_to(pkg).parts[0]
    name = first.removesuffix(".py")
    if name == FACE:
        return FACE
    if name in ALLOWED:
        return name
    return "core"


def _target(module: str) -> str | None:
    """The layer an imported module belongs to (None: not ours)."""
    parts = module.split(".")
    if parts[0] in OUTSIDE:
        return parts[0]
    if parts[0] != "eai_ray":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] == FACE:
        return FACE
    return parts[1] if parts[1] in ALLOWED else "core"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module)]
            if node.module == "eai_ray":  # `from eai_ray import cli`
                out += [(node.lineno, f"eai_ray.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute module path")
    return out


def violations(root: Path = ROOT) -> list[str]:
    pkg, bad = root / "eai_ray", []
    for path in sorted(pkg.rglob("*.py")):
        group = _group(path, pkg)
        if group == FACE:
            continue
        for line, module in _imports(path):
            tgt = _target(module)
            if tgt is None or tgt == group or tgt == "core":
                continue
            if tgt == FACE or tgt in OUTSIDE or tgt not in ALLOWED[group]:
                bad.append(f"{path.relative_to(root)}:{line}: {group} imports {module} ({tgt})")
    for outside in OUTSIDE:
        for path in sorted((root / outside).rglob("*.py")):
            for line, module in _imports(path):
                tgt = _target(module)
                if tgt == FACE or (outside == "actors" and tgt == "serve_deployments") or \
                        (outside == "serve_deployments" and tgt == "actors"):
                    bad.append(f"{path.relative_to(root)}:{line}: {outside} imports {module}")
    return bad


def test_no_layer_imports_a_higher_one():
    bad = violations()
    assert not bad, "imports against the layer rule (move the code, do not add an exception):\n" + "\n".join(bad)


def test_the_rule_catches_a_violation(tmp_path):
    """The checker itself can fail: hidden (function-local) and plain imports upward are reported."""
    pkg = tmp_path / "eai_ray"
    (pkg / "storage").mkdir(parents=True)
    (pkg / "storage" / "bad.py").write_text("def f():\n    from eai_ray.processing import silver\n")
    (pkg / "types.py").write_text("import eai_ray.observability.metrics\n")
    (pkg / "cli").mkdir()
    (pkg / "cli" / "run.py").write_text("import actors.executor\nimport eai_ray.orchestration.runner\n")
    found = violations(tmp_path)
    assert "eai_ray/storage/bad.py:2: storage imports eai_ray.processing (processing)" in found, found
    assert "eai_ray/types.py:1: core imports eai_ray.observability.metrics (observability)" in found, found
    assert len(found) == 2, found  # the face may import anything
