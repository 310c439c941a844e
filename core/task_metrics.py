"""Evaluation metrics, numpy only: MMSA 2.2.1's regression metrics (docs/selfmm.md §7) and depression metrics.

Values are rounded to 4 decimals as MMSA does. Inputs are taken as float32, as MMSA receives torch tensors;
comparisons with thresholds therefore happen in float32 exactly as in MMSA.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Dataset = Literal["mosi", "mosei", "sims"]
PHQ8_CUTOFF = 10.0  # PHQ-8 >= 10: the usual "current depression" cut-point (Kroenke et al. 2009)


def weighted_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """sklearn's f1_score(average='weighted'): per-class F1 over all seen labels, weighted by true support."""
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    labels = np.union1d(t, p)
    total = 0.0
    for label in labels:
        tp = float(np.sum((t == label) & (p == label)))
        fp = float(np.sum((t != label) & (p == label)))
        fn = float(np.sum((t == label) & (p != label)))
        denominator = 2 * tp + fp + fn
        f1 = 2 * tp / denominator if denominator else 0.0
        total += f1 * (tp + fn)
    return total / len(t) if len(t) else 0.0


def binary_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """F1 of the positive class (True / 1); 0.0 when it never occurs in either array."""
    t = np.asarray(y_true, dtype=bool).reshape(-1)
    p = np.asarray(y_pred, dtype=bool).reshape(-1)
    tp = float(np.sum(t & p))
    denominator = 2 * tp + float(np.sum(~t & p)) + float(np.sum(t & ~p))
    return 2 * tp / denominator if denominator else 0.0


def _accuracy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b)) if len(a) else float("nan")


def _multiclass_acc(pred: np.ndarray, true: np.ndarray) -> np.float64:
    return np.float64(np.sum(np.round(pred) == np.round(true)) / float(len(true)))


def _round_np(value: np.floating | float) -> float:
    """MMSA rounds numpy scalars with numpy's rounding (round(np.float64, 4)); keep that exactly."""
    return float(round(np.float64(value), 4))


def _as_float32(values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    return array


def _pearson(pred: np.ndarray, true: np.ndarray) -> np.float64:
    return np.float64(np.corrcoef(pred, true)[0][1])


def mosi_regression_metrics(pred: ArrayLike, true: ArrayLike) -> dict[str, float]:
    """MMSA's __eval_mosei_regression (MOSI and MOSEI)."""
    p, y = _as_float32(pred), _as_float32(true)
    mae = np.mean(np.absolute(p - y)).astype(np.float64)
    nonzero = y != 0
    nz_true, nz_pred = y[nonzero] > 0, p[nonzero] > 0
    has0_true, has0_pred = y >= 0, p >= 0
    return {
        "Has0_acc_2": round(_accuracy(has0_pred, has0_true), 4),
        "Has0_F1_score": round(weighted_f1(has0_true, has0_pred), 4),
        "Non0_acc_2": round(_accuracy(nz_pred, nz_true), 4),
        "Non0_F1_score": round(weighted_f1(nz_true, nz_pred), 4) if nonzero.any() else float("nan"),
        "Mult_acc_5": _round_np(_multiclass_acc(np.clip(p, -2.0, 2.0), np.clip(y, -2.0, 2.0))),
        "Mult_acc_7": _round_np(_multiclass_acc(np.clip(p, -3.0, 3.0), np.clip(y, -3.0, 3.0))),
        "MAE": _round_np(mae),
        "Corr": _round_np(_pearson(p, y)),
    }


def _bins(values: np.ndarray, inner_edges: tuple[float, ...]) -> np.ndarray:
    """Class = number of (right-closed) inner edges strictly below the value, as MMSA's interval loops."""
    classes = np.zeros(values.shape, dtype=np.float32)
    for edge in inner_edges:
        classes += values > edge
    return classes


def sims_regression_metrics(pred: ArrayLike, true: ArrayLike) -> dict[str, float]:
    """MMSA's __eval_sims_regression: everything on values clipped to [-1, 1]; 0 counts as negative."""
    p = np.clip(_as_float32(pred), -1.0, 1.0)
    y = np.clip(_as_float32(true), -1.0, 1.0)
    p2, y2 = _bins(p, (0.0,)), _bins(y, (0.0,))
    p3, y3 = _bins(p, (-0.1, 0.1)), _bins(y, (-0.1, 0.1))
    p5, y5 = _bins(p, (-0.7, -0.1, 0.1, 0.7)), _bins(y, (-0.7, -0.1, 0.1, 0.7))
    mae = np.mean(np.absolute(p - y)).astype(np.float64)
    return {
        "Mult_acc_2": _round_np(_multiclass_acc(p2, y2)),
        "Mult_acc_3": _round_np(_multiclass_acc(p3, y3)),
        "Mult_acc_5": _round_np(_multiclass_acc(p5, y5)),
        "F1_score": round(weighted_f1(y2, p2), 4),
        "MAE": _round_np(mae),
        "Corr": _round_np(_pearson(p, y)),
    }


def regression_metrics(pred: ArrayLike, true: ArrayLike, dataset: str = "mosi") -> dict[str, float]:
    """MMSA's MetricsTop('regression').getMetics(dataset)(pred, true), as plain floats."""
    if len(np.asarray(true).reshape(-1)) == 0:
        raise ValueError("no samples to evaluate")
    if dataset in ("mosi", "mosei"):
        return mosi_regression_metrics(pred, true)
    if dataset == "sims":
        return sims_regression_metrics(pred, true)
    raise ValueError(f"unknown dataset {dataset!r} for regression metrics: expected mosi, mosei or sims")


def depression_metrics(pred: ArrayLike, true: ArrayLike, cutoff: float = PHQ8_CUTOFF) -> dict[str, float]:
    """PHQ-8 regression: MAE, RMSE, Pearson, CCC, and accuracy/F1 of the binary decision score >= cutoff."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(true, dtype=np.float64).reshape(-1)
    if len(y) == 0 or len(p) != len(y):
        raise ValueError(f"need equally long, non-empty pred and true, got {len(p)} and {len(y)}")
    error = p - y
    cov = float(np.mean((p - p.mean()) * (y - y.mean())))
    ccc_denominator = p.var() + y.var() + (p.mean() - y.mean()) ** 2
    pearson = float(np.corrcoef(p, y)[0][1]) if p.std() > 0 and y.std() > 0 else float("nan")
    p_bin, y_bin = p >= cutoff, y >= cutoff
    return {
        "MAE": round(float(np.mean(np.abs(error))), 4),
        "RMSE": round(float(np.sqrt(np.mean(error**2))), 4),
        "Pearson": round(pearson, 4),
        "CCC": round(2 * cov / ccc_denominator, 4) if ccc_denominator > 0 else float("nan"),
        "Acc_2": round(_accuracy(p_bin, y_bin), 4),
        "F1": round(binary_f1(y_bin, p_bin), 4),
        "F1_weighted": round(weighted_f1(y_bin, p_bin), 4),
    }


def task_metrics(pred: ArrayLike, true: ArrayLike, *, task: str, dataset: str) -> dict[str, float]:
    """The metric set that goes with a task: MMSA's for sentiment, clinical ones for depression."""
    if task == "depression":
        return depression_metrics(pred, true)
    return regression_metrics(pred, true, dataset)
