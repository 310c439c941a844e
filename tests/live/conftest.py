"""Fixtures for the live end-to-end tests: a model bundle the agent accepts for live scoring."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

# A candidate's acceptance: `LIVE_TESTS_BUNDLE=DIR pytest tests/live` runs these tests on that bundle (not an
# AFFECTSTREAM_ variable: the agent's settings refuse unknown ones)
LIVE_BUNDLE_ENV = "LIVE_TESTS_BUNDLE"


@pytest.fixture(scope="session")
def live_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle named by $LIVE_TESTS_BUNDLE if set; else the default sentiment bundle when its committed
    model exists, else a tiny random live bundle.

    Either way the card's feature spec is the one the agent computes (`FeatureSpec.for_tokenizer`), so
    `open_runtime` accepts it and every stage runs for real; only the tiny model's weights are random.
    """
    from default_model.artefacts import DEFAULT_DIR, export_default_bundle

    if os.environ.get(LIVE_BUNDLE_ENV):
        chosen = Path(os.environ[LIVE_BUNDLE_ENV])
        if not (chosen / "card.json").is_file():
            raise pytest.UsageError(f"{LIVE_BUNDLE_ENV}={chosen}: not a model bundle (no card.json)")
        log.info("live tests use the bundle %s", chosen)
        return chosen
    if (DEFAULT_DIR / "heads.safetensors").is_file():
        bundle, _ = export_default_bundle(tmp_path_factory.mktemp("default") / "bundle", variants=False)
        log.info("live tests use the default sentiment bundle")
        return bundle
    from live_support import export_tiny_live_bundle

    root = tmp_path_factory.mktemp("tiny-live")
    return export_tiny_live_bundle(root / "encoder", root / "bundle")


@pytest.fixture(autouse=True, scope="module")
def _restore_loopback() -> Iterator[None]:
    """The servers here offer loopback ICE candidates only (a process-wide aioice setting): undo it after."""
    from agent.loopback import configure_loopback, current_mode

    previous = current_mode()
    yield
    configure_loopback(previous)
