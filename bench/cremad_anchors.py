"""Classical anchors on the CREMA-D split: eGeMAPS functionals -> ridge regression and boosted trees.

Each clip's Opus file is decoded by the agent's decoder (`core.media.decode_file`, 16 kHz mono) and described
by openSMILE's eGeMAPSv02 functionals (88 numbers per clip), cached per clip. Both regressors are fitted on
the train actors with each hyper-parameter setting, the setting with the best Pearson r on the valid actors
is kept, and that train-only fit is scored on the test actors. Label: `voice_valence`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from bench.cremad_metrics import pearson_or_zero
from core.media import decode_file
from core.types import SAMPLE_RATE_HZ, AudioChunk
from models.adapters.crema_d import CremaClip, voice_valence

log = logging.getLogger(__name__)

N_FUNCTIONALS = 88
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
GBT_GRID: dict[str, tuple[Any, ...]] = {
    "learning_rate": (0.05, 0.1),
    "max_leaf_nodes": (15, 31),
    "min_samples_leaf": (10, 30),
}
GBT_ITERATIONS = 300
# The trees' OpenMP threads spin-wait for each other: on 2 cores shared with other work a fit took 10-60x
# longer with all threads than with one (HistGradientBoostingRegressor, 5,317 x 88).
FIT_THREADS = 1


@dataclass(frozen=True, slots=True)
class AnchorResult:
    name: str
    test_r: float
    valid_r: float
    params: dict[str, Any]  # the setting chosen on valid


def clip_samples(path: Path) -> np.ndarray:
    """The clip's whole audio, float32 16 kHz mono, as the agent decodes it."""
    chunks = [item.samples for item in decode_file(path) if isinstance(item, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class EgemapsCache:
    """eGeMAPSv02 functionals per clip, computed once and kept as .npy under `root` (keyed by the version)."""

    def __init__(self, root: Path, cremad_dir: Path, *, workers: int = 2) -> None:
        import opensmile  # the eval extra: imported where used

        self._opensmile = opensmile
        self.dir = Path(root) / f"eGeMAPSv02-functionals-opensmile{opensmile.__version__}"
        self.cremad_dir = Path(cremad_dir)
        self.workers = workers
        self._local = threading.local()

    def _smile(self) -> Any:
        if not hasattr(self._local, "smile"):  # one extractor per thread
            self._local.smile = self._opensmile.Smile(
                feature_set=self._opensmile.FeatureSet.eGeMAPSv02,
                feature_level=self._opensmile.FeatureLevel.Functionals,
            )
        return self._local.smile

    def functionals(self, clip: CremaClip) -> np.ndarray:
        cached = self.dir / f"{clip.name}.npy"
        if cached.is_file():
            return np.load(cached)
        samples = clip_samples(self.cremad_dir / clip.file)
        values = self._smile().process_signal(samples, SAMPLE_RATE_HZ).to_numpy(np.float64).reshape(-1)
        if values.shape != (N_FUNCTIONALS,):
            raise ValueError(f"{clip.file}: {values.shape[0]} eGeMAPS functionals, expected {N_FUNCTIONALS}")
        partial = cached.with_suffix(".partial.npy")
        np.save(partial, values)
        partial.replace(cached)
        return values

    def matrix(self, clips: Sequence[CremaClip]) -> np.ndarray:
        """float64 [len(clips), 88], in clip order."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return np.stack(list(pool.map(self.functionals, clips)))


def select_on_valid(
    make: Callable[..., Any],
    grid: Mapping[str, Sequence[Any]],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
) -> tuple[Any, dict[str, Any], float]:
    """Fit `make(**setting)` on train for every setting of `grid`; (fitted model, setting, valid r) of the
    best valid r. The model returned was fitted on train only."""
    best: tuple[Any, dict[str, Any], float] | None = None
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values, strict=True))
        model = make(**setting).fit(*train)
        r = pearson_or_zero(model.predict(valid[0]), valid[1])
        if best is None or r > best[2]:
            best = (model, setting, r)
    assert best is not None
    return best


def ridge(alpha: float) -> Any:
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def boosted_trees(**setting: Any) -> Any:
    return HistGradientBoostingRegressor(max_iter=GBT_ITERATIONS, early_stopping=False, random_state=0, **setting)


def evaluate_anchors(
    clips: Sequence[CremaClip], cremad_dir: Path, cache_root: Path, *, workers: int = 2
) -> tuple[list[AnchorResult], dict[str, float]]:
    """Ridge and boosted trees on eGeMAPS: fit on train, choose on valid, r on test; and wall seconds."""
    started = time.perf_counter()
    features = EgemapsCache(cache_root, cremad_dir, workers=workers).matrix(clips)
    features_s = time.perf_counter() - started
    labels = np.asarray([voice_valence(c) for c in clips])
    split = np.asarray([c.split for c in clips])
    train, valid, test = ((features[split == s], labels[split == s]) for s in ("train", "valid", "test"))
    results = []
    for name, make, grid in (("ridge", ridge, {"alpha": RIDGE_ALPHAS}), ("boosted_trees", boosted_trees, GBT_GRID)):
        with threadpool_limits(limits=FIT_THREADS):
            model, setting, valid_r = select_on_valid(make, grid, train, valid)
        results.append(AnchorResult(name, pearson_or_zero(model.predict(test[0]), test[1]), valid_r, setting))
        log.info("anchor %s: valid r %.3f, test r %.3f (%s)", name, valid_r, results[-1].test_r, setting)
    seconds = {"egemaps": features_s, "fit": time.perf_counter() - started - features_s}
    return results, seconds
