"""The library's layers import only downward, and never from the recipes.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "bestrq2_lobes"
# subpackage -> the subpackages it may import (docs/architecture.md)
ALLOWED = {
    "model": {"model"},
    "data": {"data", "model"},
    "datasets": {"datasets", "data", "model"},
    "training": {"training", "data", "model"},
    "lobe": {"lobe", "data", "model"},
    "downstream": {"downstream", "lobe", "training", "data", "model"},
    "adapters": {"adapters", "lobe", "data", "model"},
    "plots": {"plots", "downstream", "lobe", "training", "data", "model"},
}
MODULES = sorted(p for p in LIBRARY.glob("*/*.py"))


def imported_layers(path: Path) -> set[str]:
    """Subpackages of bestrq2_lobes that a module imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "recipes":
                found.add("recipes")
            if parts[0] == "bestrq2_lobes" and len(parts) > 1:
                found.add(parts[1])
    return found & (set(ALLOWED) | {"recipes"})


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_imports_only_its_own_and_lower_layers(path):
    layer = path.parent.name
    assert layer in ALLOWED, f"{layer}/ is not a known layer: add it to ALLOWED"
    wrong = imported_layers(path) - ALLOWED[layer]
    assert not wrong, f"{layer}/{path.name} imports {sorted(wrong)}"


def test_every_subpackage_says_what_it_may_import():
    for layer in ALLOWED:
        doc = ast.get_docstring(
            ast.parse((LIBRARY / layer / "__init__.py").read_text())
        )
        assert doc and len(doc.split()) > 15, layer
