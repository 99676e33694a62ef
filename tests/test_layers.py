"""Imports point inward (DESIGN.md): a module imports only from its own layer or below."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "llama2"

LAYERS = {
    "errors": 0, "types": 0, "config": 0, "atomic": 0, "progress": 0,
    "model": 1,
    "generation": 2, "data": 2, "api": 2,
    "providers": 3, "train": 3,
    "evaluate": 4, "serve": 4,
    "cli": 5, "__main__": 5,
}
# Evaluation and serving reach models only through providers, never the engine directly.
FORBIDDEN = {"evaluate": {"generation", "api"}, "serve": {"generation", "api"}}


def component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "llama2" and len(parts) > 1 else None


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names if node.module == "llama2"]
    return found


def source_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_inward(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    assert own in LAYERS, f"{own} has no layer in DESIGN.md; add it to LAYERS"
    for module in imports_of(path):
        target = component(module)
        if target is None or target == own or target == "__init__":
            continue
        assert target in LAYERS, f"{path.name} imports unknown component {target}"
        assert LAYERS[target] <= LAYERS[own], f"{own} (L{LAYERS[own]}) must not import {module} (L{LAYERS[target]})"
        assert target not in FORBIDDEN.get(own, set()), f"{own} must reach models through providers, not {module}"
