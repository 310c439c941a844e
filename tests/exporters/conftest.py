"""Fixtures of the exporter tests: a tiny random BERT directory (session-wide)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_selfmm import make_tiny_encoder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("encoder") / "tiny-bert")
