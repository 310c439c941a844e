"""Metrics equal MMSA 2.2.1's MetricsTop (numpy port), sklearn's weighted F1, and hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from core.task_metrics import depression_metrics, regression_metrics, weighted_f1


def _mmsa(dataset: str, pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    from MMSA.utils.metricsTop import MetricsTop

    fn = MetricsTop("regression").getMetics(dataset)
    return fn(torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(true.astype(np.float32)))


def _samples(seed: int, bound: float, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = np.round(rng.uniform(-bound, bound, n) * 3) / 3  # MOSI labels are means of 3 ratings
    true[:7] = 0.0
    pred = true + rng.normal(0, bound / 3, n)
    pred[7:12] = [0.0, 0.5, -0.5, 1.5, -2.5]  # rounding ties (half to even) and exact zeros
    pred[12:16] = [0.1, -0.1, 0.7, -0.7]  # SIMS bin edges
    return pred.astype(np.float32), true.astype(np.float32)


@pytest.mark.parametrize("dataset,bound,seed", [("mosi", 3.0, 0), ("mosi", 3.0, 1), ("mosei", 3.4, 2),
                                                 ("sims", 1.0, 3), ("sims", 1.3, 4)])
def test_regression_metrics_equal_mmsa_metricstop(dataset: str, bound: float, seed: int) -> None:
    pred, true = _samples(seed, bound)
    expected = _mmsa(dataset, pred, true)
    got = regression_metrics(pred, true, dataset)
    assert list(got) == list(expected)
    assert got == pytest.approx({k: float(v) for k, v in expected.items()}, abs=0, rel=0)


def test_regression_metrics_on_a_hand_checked_case() -> None:
    got = regression_metrics([1.0, -1.0, 0.4, -2.6], [1.0, 1.0, 0.0, -3.0], "mosi")
    assert got["Has0_acc_2"] == 0.75  # y=0 counts as non-negative
    assert got["Non0_acc_2"] == pytest.approx(2 / 3, abs=1e-4)
    assert got["MAE"] == pytest.approx((0 + 2 + 0.4 + 0.4) / 4, abs=1e-4)
    assert got["Mult_acc_7"] == 0.75  # round(-2.6) = -3 matches, round(-1) != round(1)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_f1_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 3 if seed % 2 else 2, 50)
    pred = rng.integers(0, 3, 50)
    assert weighted_f1(true, pred) == pytest.approx(f1_score(true, pred, average="weighted"), abs=1e-12)


def test_depression_metrics_hand_checked() -> None:
    true = np.array([2.0, 8.0, 10.0, 15.0, 20.0])
    pred = np.array([4.0, 11.0, 9.0, 15.0, 18.0])
    got = depression_metrics(pred, true)
    assert got["MAE"] == pytest.approx(1.6)
    assert got["RMSE"] == pytest.approx(np.sqrt((4 + 9 + 1 + 0 + 4) / 5), abs=1e-4)
    assert got["Pearson"] == pytest.approx(np.corrcoef(pred, true)[0, 1], abs=1e-4)
    # binary at PHQ-8 >= 10: true [0,0,1,1,1], pred [0,1,0,1,1] -> acc 3/5, F1 = 2*2/(2*2+1+1)
    assert got["Acc_2"] == 0.6
    assert got["F1"] == pytest.approx(4 / 6, abs=1e-4)
    perfect = depression_metrics(true, true)
    assert perfect["CCC"] == 1.0 and perfect["MAE"] == 0.0
    shifted = depression_metrics(true + 5, true)
    assert shifted["Pearson"] == 1.0 and shifted["CCC"] < 0.8  # CCC punishes bias, Pearson does not


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        regression_metrics([0.0, 1.0], [0.0, 1.0], "iemocap")
    with pytest.raises(ValueError, match="equally long"):
        depression_metrics([1.0], [1.0, 2.0])
