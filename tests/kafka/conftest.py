"""Fixtures of the Kafka tests that run the real pipeline: the default sentiment bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sentiment_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default sentiment bundle: the checkout's export when current, else exported afresh (as the live
    tests do)."""
    from core.card import DEFAULT_BUNDLE_DIR
    from default_model.artefacts import bundle_is_current, export_default_bundle

    if bundle_is_current(REPO_ROOT / DEFAULT_BUNDLE_DIR):
        return REPO_ROOT / DEFAULT_BUNDLE_DIR
    bundle, _ = export_default_bundle(tmp_path_factory.mktemp("default") / "bundle", variants=False)
    return bundle
