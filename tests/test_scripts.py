"""The benchmark and set-up scripts import lift-local inside their functions (a fresh process per
measurement), where a renamed module or function shows only when someone runs them: every such import
must resolve, and so must their imports of the scripts' shared helpers (benchlib)."""

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))
OURS = ("lift_local", "benchlib")  # what a script is run with: scripts/ is first on its sys.path


def _imports(path: Path) -> list[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(OURS):
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names if alias.name.startswith(OURS)]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_lift_local_import_of_a_script_resolves(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))
    missing = []
    for module, name, line in _imports(script):
        try:
            imported = importlib.import_module(module)
        except ImportError as err:
            missing.append(f"line {line}: {module}: {err}")
            continue
        if name and not hasattr(imported, name):
            try:  # a submodule imported by name
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"line {line}: {module} has no {name}")
    assert missing == []


def test_the_check_sees_a_stale_import(tmp_path):
    stale = tmp_path / "old.py"
    stale.write_text("def f():\n    from lift_local.llm import engine_settings\n")
    assert _imports(stale) == [("lift_local.llm", "engine_settings", 2)]
    assert not hasattr(importlib.import_module("lift_local.llm"), "engine_settings")
