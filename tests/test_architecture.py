"""The layers of the library as the code has them: import contracts, types, module sizes.

These fail the suite when an import goes up a layer or closes a cycle (import-linter contracts in
pyproject.toml), when mypy finds an error, or when a module outgrows one screenful of concerns.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("asif_vdb", "ingest")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def test_import_contracts_hold() -> None:
    """Each layer imports only the layers below it, and ingest uses the package's public API only."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_no_module_imports_the_project_inside_a_function() -> None:
    """Imports inside functions hide cycles; only optional heavy dependencies may be imported late."""
    project = {m.split(".")[0] for m in _modules()}
    late = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in project):
                    late.append(f"{name}:{node.lineno}")
                elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in project for a in node.names):
                    late.append(f"{name}:{node.lineno}")
    assert late == []


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_mypy_finds_no_error() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
