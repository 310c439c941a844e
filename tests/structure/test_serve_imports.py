"""Serving needs no torch: importing the CLI and the whole serve path leaves torch and transformers out."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "safetensors", "onnx")

SERVE_PATH = (
    "cli.main",
    "agent.server",
    "agent.runtime",
    "agent.pipeline",
    "agent.replay",
    "agent.monitor",
    "agent.evaluate",
    "agent.report",
)


def loaded_after_import(modules: tuple[str, ...]) -> list[str]:
    """Top-level packages in sys.modules after a fresh interpreter imports `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_serve_path_imports_no_torch() -> None:
    loaded = loaded_after_import(SERVE_PATH)
    assert "agent" in loaded and "cli" in loaded
    assert not [name for name in HEAVY if name in loaded]


def test_the_check_sees_torch_when_it_is_imported() -> None:
    # the same probe run on a torch-side module: proves it can fail
    assert "torch" in loaded_after_import(("exporters.onnx",))
