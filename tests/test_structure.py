"""The shape of the code: no import circle among lift-local's modules, and a figure toolkit that stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import breadth_first_order, connected_components

PACKAGE = Path(__file__).resolve().parents[1] / "lift_local"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The lift-local modules `path` imports, at run time or for type checking alike."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module.startswith("lift_local")}


def graph() -> tuple[list[str], np.ndarray]:
    """Every module and the adjacency matrix of its imports, lazy and type-checking ones included. Importing
    a.b runs a/__init__ first, so a module also points at its package: a circle through a package counts."""
    modules = sorted(module_name(path) for path in PACKAGE.rglob("*.py"))
    index = {name: i for i, name in enumerate(modules)}
    edges = np.zeros((len(modules), len(modules)), dtype=bool)
    for name in modules:
        path = PACKAGE.parent / (name.replace(".", "/") + ("/__init__.py" if name in PACKAGES else ".py"))
        for target in imports(path) | {name.rpartition(".")[0]}:
            if target in index and target != name:
                edges[index[name], index[target]] = True
    return modules, edges


PACKAGES = {module_name(path) for path in PACKAGE.rglob("__init__.py")}


def test_no_import_circle():
    modules, edges = graph()
    _, component = connected_components(edges, directed=True, connection="strong")
    circles = [[modules[i] for i in np.flatnonzero(component == c)] for c in np.unique(component)
               if np.sum(component == c) > 1]
    assert circles == []


def test_the_figure_toolkit_imports_nothing_of_lift_local():
    assert imports(PACKAGE / "figures.py") == set()


def test_the_judge_package_does_not_import_the_phases():
    modules, edges = graph()
    for i, name in enumerate(modules):
        if name.startswith("lift_local.judge"):
            reached = {modules[j] for j in breadth_first_order(edges, i, directed=True, return_predecessors=False)}
            assert not any(target.startswith("lift_local.phases") for target in reached), name
