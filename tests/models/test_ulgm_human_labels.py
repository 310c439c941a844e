"""ulgm_keep_human_labels (docs/selfmm.md §4.4): a row with a human unimodal label keeps it, at weight 1."""

from __future__ import annotations

import pytest
import torch

from models.ulgm import ULGM


def _ulgm() -> ULGM:
    dims = {"fusion": 4, "text": 4, "audio": 4, "vision": 4}
    return ULGM(4, dims, exclude_zero=True, label_bounds=(-3.0, 3.0))


def test_human_rows_keep_their_label_and_the_others_are_generated() -> None:
    ulgm = _ulgm()
    rows = torch.arange(4)
    ulgm.init_labels(rows, torch.tensor([1.0, -1.0, 2.0, -2.0]))
    ulgm.keep_human_labels("audio", rows, torch.tensor([0.5, float("nan"), -1.5, float("nan")]))
    assert ulgm.label_map["audio"].tolist() == pytest.approx([0.5, -1.0, -1.5, -2.0])
    torch.manual_seed(0)
    features = {f"Feature_{k}": torch.randn(4, 4) for k in "ftav"}
    ulgm.update_features(features, rows)
    ulgm.update_centers()
    ulgm.update_labels(features, epoch=2, indexes=rows)
    audio = ulgm.label_map["audio"].tolist()
    assert audio[0] == pytest.approx(0.5) and audio[2] == pytest.approx(-1.5)
    assert audio[1] != pytest.approx(-1.0) or audio[3] != pytest.approx(-2.0)  # generated rows moved


def test_a_human_label_weighs_one_where_ulgm_would_weigh_zero() -> None:
    ulgm = _ulgm()
    rows = torch.arange(4)
    ulgm.init_labels(rows, torch.tensor([1.0, 1.0, 1.0, 1.0]))
    pred = torch.zeros(4)
    assert float(ulgm.weighted_loss(pred, "audio", rows)) == 0.0  # tanh(|y_a - y_m|) = 0 everywhere
    ulgm.keep_human_labels("audio", rows, torch.tensor([1.0, float("nan"), float("nan"), float("nan")]))
    assert float(ulgm.weighted_loss(pred, "audio", rows)) == pytest.approx(0.25)  # row 0 only: |0 - 1| / 4
    with pytest.raises(ValueError, match="fusion"):
        ulgm.keep_human_labels("fusion", rows, torch.zeros(4))
