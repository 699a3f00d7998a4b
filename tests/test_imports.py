"""The import graph of src/ and the root scripts: no cycle between modules, and packages import only lower layers.

Every import counts, at module level or inside a function, so a lazy import cannot hide a loop.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a package may import itself and the packages before it, never one after it.
LAYERS = (
    "config",
    "data",
    "submission",
    "metrics",
    "synthetic",
    "cell_masks",
    "scoring",
    "crops",
    "models",
    "segm_labels",
    "sccam",
    "training",
    "cam",
    "image_labels",
    "profiles",
    "viz",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The known modules that ``path`` imports anywhere (``from pkg import mod`` counts as ``pkg.mod``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / "src").rglob("*.py")) + sorted(ROOT.glob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "src" and len(parts) > 1 else None


def test_find_cycle_reports_a_loop_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_every_package_of_src_has_a_layer():
    packages = {p.name for p in (ROOT / "src").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_packages_import_only_lower_layers(layer):
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if package(module) == layer
        for target in targets
        if package(target) is not None and rank[package(target)] > rank[layer]
    )
    assert not upward, f"imports that run upward: {upward}"
