"""Fixtures of the default-model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from default_model.artefacts import DEFAULT_DIR, export_default_bundle


@pytest.fixture(scope="session")
def default_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed default model (trained on the rated sentences and the CREMA-D voices), exported fp32 only."""
    path = tmp_path_factory.mktemp("bundles") / "sentiment-default"
    out, exported = export_default_bundle(path, DEFAULT_DIR, variants=False)
    assert exported and out == path
    return path
