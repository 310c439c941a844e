"""Fixtures of the default-model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from default_model.artefacts import VOICES_DIR, export_default_bundle


@pytest.fixture(scope="session")
def voices_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed voices candidate (trained on the CREMA-D voices too), exported fp32 only."""
    path, _ = export_default_bundle(tmp_path_factory.mktemp("bundles") / "sentiment-voices", VOICES_DIR,
                                    variants=False)
    return path
