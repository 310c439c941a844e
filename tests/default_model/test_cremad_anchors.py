"""The eGeMAPS anchors run end to end on a handful of real CREMA-D clips and cache their functionals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.cremad_anchors import GBT_GRID, N_FUNCTIONALS, RIDGE_ALPHAS, EgemapsCache, evaluate_anchors
from default_model.cremad import DEFAULT_CREMAD_DIR, load_clips
from models.adapters.crema_d import CremaClip


@pytest.fixture(scope="module")
def few_clips() -> list[CremaClip]:
    if not (DEFAULT_CREMAD_DIR / "clips.csv").is_file():
        pytest.fail(f"CREMA-D corpus not found at {DEFAULT_CREMAD_DIR}")
    clips = load_clips(DEFAULT_CREMAD_DIR, per_split=40, seed=0)
    kept = {"train": 40, "valid": 20, "test": 20}
    return [c for split, n in kept.items() for c in [c for c in clips if c.split == split][:n]]


def test_anchors_give_finite_r(few_clips: list[CremaClip], tmp_path: Path) -> None:
    anchors, seconds = evaluate_anchors(few_clips, DEFAULT_CREMAD_DIR, tmp_path, workers=1)
    assert [a.name for a in anchors] == ["ridge", "boosted_trees"]
    for anchor in anchors:
        assert math.isfinite(anchor.test_r) and -1.0 <= anchor.test_r <= 1.0, anchor
        assert math.isfinite(anchor.valid_r), anchor
    assert anchors[0].params["alpha"] in RIDGE_ALPHAS
    assert all(anchors[1].params[k] in values for k, values in GBT_GRID.items())
    assert seconds["egemaps"] > 0


def test_functionals_are_cached_per_clip(few_clips: list[CremaClip], tmp_path: Path) -> None:
    cache = EgemapsCache(tmp_path, DEFAULT_CREMAD_DIR, workers=1)
    first = cache.matrix(few_clips[:3])
    assert first.shape == (3, N_FUNCTIONALS) and np.isfinite(first).all()
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(f"{c.name}.npy" for c in few_clips[:3])
    np.testing.assert_array_equal(cache.matrix(few_clips[:3]), first)
