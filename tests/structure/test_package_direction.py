"""The packages depend on each other in one direction only (README "How it works").

core ← models ← exporters ← default_model ← cli, and core ← agent ← cli: a package imports only the packages
listed for it below, at module level or inside a function. Heavy libraries are kept out of the layers that
must run without them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = ("core", "agent", "models", "exporters", "default_model", "cli")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "models": {"core", "models"},
    "agent": {"core", "agent"},
    "exporters": {"core", "models", "exporters"},
    "default_model": {"core", "agent", "models", "exporters", "default_model"},
    "cli": set(PROJECT),
}
# Third-party packages a layer must never import: serving runs without torch, the core without WebRTC.
FORBIDDEN: dict[str, set[str]] = {
    "core": {"torch", "transformers", "aiortc", "onnx", "kafka"},
    "agent": {"torch", "transformers", "onnx", "safetensors"},
    "models": {"aiortc", "kafka"},
}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in `tree`, wherever it is."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str, source: str, where: str) -> list[str]:
    """Imports in one module of `package` that point up or sideways, or at a forbidden library."""
    problems = []
    for line, top in imported_modules(ast.parse(source)):
        if top in PROJECT and top not in ALLOWED[package]:
            problems.append(f"{where}:{line}: {package} imports {top}")
        if top in FORBIDDEN.get(package, set()):
            problems.append(f"{where}:{line}: {package} imports {top}")
    return problems


def test_every_project_module_imports_only_lower_packages() -> None:
    problems = []
    for package in PROJECT:
        for path in sorted((REPO / package).rglob("*.py")):
            problems += violations(package, path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        ("core", "from agent.settings import Settings\n", "core imports agent"),
        ("agent", "def f():\n    from exporters.onnx import export\n", "agent imports exporters"),
        ("agent", "import torch\n", "agent imports torch"),
        ("models", "from cli.options import build_settings\n", "models imports cli"),
        ("core", "import aiortc\n", "core imports aiortc"),
    ],
)
def test_the_check_catches_a_wrong_import(package: str, source: str, expected: str) -> None:
    assert [p.split(": ", 1)[1] for p in violations(package, source, "x.py")] == [expected]


def test_the_check_accepts_imports_that_point_down() -> None:
    assert violations("exporters", "from models.selfmm import SelfMM\nfrom core.card import ModelCard\n", "x") == []
