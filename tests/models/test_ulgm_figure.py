"""ULGM's labels per epoch: recorded during training, written to the run directory, drawn as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import SelfMMConfig
from models.runner import run_training
from models.train import TrainOptions
from models.ulgm_figure import FIGURE_NAME, draw_label_history, shown_epochs
from models.ulgm_history import FILE_NAME, LabelHistory

EPOCHS = 3
UNIMODAL = ("text", "audio", "vision")


@pytest.fixture(scope="module")
def run_dir(synthetic_pickle: Path, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ulgm_run")
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, batch_size=8, use_finetune=False)
    run_training(
        config, synthetic_pickle, out, seed=4, options=TrainOptions(max_epochs=EPOCHS, device="cpu", progress=False)
    )
    return out


def test_training_writes_the_labels_of_every_epoch(run_dir: Path, synthetic_pickle: Path) -> None:
    import pickle

    y_m = np.asarray(pickle.loads(synthetic_pickle.read_bytes())["train"]["regression_labels"])
    data = json.loads((run_dir / FILE_NAME).read_text())
    assert data["version"] == 1 and data["modalities"] == ["fusion", "text", "audio", "vision"]
    assert data["label_range"] == [-3.0, 3.0]
    edges = np.asarray(data["bin_edges"])
    np.testing.assert_allclose(np.diff(edges), 0.25)
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    for entry in data["epochs"]:
        assert set(entry["labels"]) == {"fusion", "text", "audio", "vision"}
        for stats in entry["labels"].values():
            assert set(stats) == {"counts", "mean", "std", "mean_abs_diff_to_m"}
            assert len(stats["counts"]) == len(edges) - 1 and sum(stats["counts"]) == len(y_m)
        # fusion is the human label throughout
        fusion = entry["labels"]["fusion"]
        assert fusion["counts"] == np.histogram(y_m, bins=edges)[0].tolist()
        assert fusion["mean"] == pytest.approx(y_m.mean(), abs=1e-5)
        assert fusion["std"] == pytest.approx(y_m.std(), abs=1e-5)

    first, last = data["epochs"][0]["labels"], data["epochs"][-1]["labels"]
    for mode in UNIMODAL:  # ULGM starts from y_m and updates only from epoch 2 on
        assert first[mode] == first["fusion"]
        assert last[mode]["mean_abs_diff_to_m"] > 0
    assert any(last[mode]["counts"] != last["fusion"]["counts"] for mode in UNIMODAL)
    assert LabelHistory.read(run_dir / FILE_NAME).to_dict() == data  # round trip


def test_training_draws_the_figure(run_dir: Path) -> None:
    with Image.open(run_dir / FIGURE_NAME) as image:
        assert image.format == "PNG"
        assert image.size == (900, 40 + 160 * EPOCHS)  # 9 in wide, 1.6 in per epoch row, at 100 dpi
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.var() > 0
    for column in np.array_split(pixels, 3, axis=1):  # every modality column has drawn content
        assert (column.min(axis=2) < 200).mean() > 0.01


def test_figure_has_a_panel_per_epoch_and_modality(run_dir: Path) -> None:
    history = LabelHistory.read(run_dir / FILE_NAME)
    fig = draw_label_history(history)
    assert len(fig.axes) == EPOCHS * 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"epoch {e}: {m}" for e in range(1, EPOCHS + 1) for m in UNIMODAL]
    for ax, (entry, mode) in zip(fig.axes, [(e, m) for e in history.epochs for m in UNIMODAL], strict=True):
        outline, filled = ax.patches  # the multimodal outline behind, the generated labels in front
        assert outline.get_zorder() < filled.get_zorder() and filled.get_fill() and not outline.get_fill()
        assert list(outline.get_data().values) == list(entry.modalities["fusion"].counts)
        assert list(filled.get_data().values) == list(entry.modalities[mode].counts)
    assert "40 samples" in fig.get_suptitle()


def test_record_bins_clips_and_measures(tmp_path: Path) -> None:
    history = LabelHistory.over_range(0.0, 24.0)  # PHQ-8: 24 bins, 1 wide
    y_m = torch.tensor([0.0, 3.5, 10.0, 24.0])
    text = torch.tensor([0.5, 3.5, 12.0, 30.0])  # 30 is outside the range: counted in the last bin
    entry = history.record(1, {"fusion": y_m, "text": text, "audio": y_m.clone(), "vision": y_m - 1})
    assert len(history.bin_edges) == 25 and history.label_range == (0.0, 24.0)
    counts = entry.modalities["text"].counts
    assert sum(counts) == 4 and counts[0] == 1 and counts[3] == 1 and counts[12] == 1 and counts[23] == 1
    assert entry.modalities["fusion"].counts[23] == 1  # the upper edge belongs to the last bin
    assert entry.modalities["vision"].counts[0] == 1 and entry.modalities["vision"].counts[23] == 1  # -1 clipped
    assert entry.modalities["text"].mean == pytest.approx(11.5)
    assert entry.modalities["text"].std == pytest.approx(float(np.std([0.5, 3.5, 12.0, 30.0])), abs=1e-5)
    assert entry.modalities["text"].mean_abs_diff_to_m == pytest.approx((0.5 + 0 + 2 + 6) / 4)
    assert entry.modalities["vision"].mean_abs_diff_to_m == pytest.approx(1.0)
    assert LabelHistory.read(history.write(tmp_path / "h.json")) == history
    with pytest.raises(ValueError, match="version"):
        LabelHistory.from_dict({**history.to_dict(), "version": 99})


def test_long_runs_show_evenly_spaced_epochs_first_and_last_included() -> None:
    history = LabelHistory.over_range(-1.0, 1.0)
    labels = torch.linspace(-1, 1, 10)
    for epoch in range(1, 31):
        history.record(epoch, {"fusion": labels, "text": labels * 0.5, "audio": labels, "vision": labels})
    shown = [e.epoch for e in shown_epochs(history, max_rows=6)]
    assert len(shown) == 6 and shown[0] == 1 and shown[-1] == 30 and shown == sorted(shown)
    fig = draw_label_history(history, max_rows=6)
    assert len(fig.axes) == 18 and fig.axes[-1].get_title() == "epoch 30: vision"
    with pytest.raises(ValueError, match="no epochs"):
        draw_label_history(LabelHistory.over_range(-1.0, 1.0))


def test_run_files_without_matplotlib_keep_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    from models.ulgm_figure import write_label_files

    history = LabelHistory.over_range(-3.0, 3.0)
    history.record(1, {m: torch.zeros(4) for m in ("fusion", *UNIMODAL)})
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    assert write_label_files(history, tmp_path) == [tmp_path / FILE_NAME]
    assert not (tmp_path / FIGURE_NAME).exists() and "matplotlib is not installed" in caplog.text
    assert LabelHistory.read(tmp_path / FILE_NAME) == history
