"""Long jobs show a bar per phase with its total and ETA on stderr (core.progress): dataset build, training
epochs, and the default-model build (speech + features per split, each epoch, the test pass)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_selfmm import make_tiny_encoder
from typer.testing import CliRunner

from cli.main import app
from core.progress import progress_bar

REPO_ROOT = Path(__file__).resolve().parents[1]


def finished_bar(stderr: str, desc: str) -> re.Match[str] | None:
    """The line of a finished bar `desc`: n/total with n == total, and the [elapsed<remaining] (ETA) field."""
    line = re.compile(rf"^{re.escape(desc)}: 100%\|[^|\r\n]*\| (\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d", re.MULTILINE)
    match = line.search(stderr)
    return match if match and match[1] == match[2] else None


def test_outside_a_terminal_a_bar_is_lines_with_total_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(desc="phase", total=3, unit="step", log_interval_s=0.0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err  # one line per refresh: a log has no carriage returns to pile up
    lines = err.splitlines()
    assert lines[0].startswith("phase:   0%|") and "0/3 [00:00<?" in lines[0]  # the start; no ETA yet
    assert len(lines) == 5 and finished_bar(err, "phase") and lines[-1] == lines[-2]  # the last line kept


def test_a_terminal_gets_a_bar_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(progress_bar(range(4), desc="phase", unit="step")) == [0, 1, 2, 3]
    assert "\rphase: 100%" in terminal.getvalue() and "4/4 [00:00<00:00" in terminal.getvalue()


def test_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress_bar(range(3), desc="phase", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_bert_progress"))


@pytest.fixture()
def torch_threads() -> Iterator[None]:
    """The builds set torch's thread count (their --workers); the rest of the session keeps its own."""
    import torch  # the train extra: only these tests need it

    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _recordings(directory: Path) -> Path:
    """Six 1.5 s noisy tones and a labels CSV with their text (train 4, valid 1, test 1)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(["train"] * 4 + ["valid", "test"]):
        t = np.arange(24000) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(directory / f"clip{i}.wav", audio.astype(np.float32), 16000)
        rows.append({"file": f"clip{i}.wav", "start_s": 0, "end_s": 1.5, "label": i % 3 - 1,
                     "text": "i feel tired all time" if i % 2 else "it was a really good day", "split": split})
    with open(directory / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return directory / "labels.csv"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # correlations over one or two samples are undefined
def test_dataset_build_and_training_show_their_phases(
    tiny_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], torch_threads: None
) -> None:
    import torch  # the train extra: only these tests need it

    from models.config import SelfMMConfig
    from models.datasets import MMSADataset, load_mmsa_pickle
    from models.selfmm import SelfMM
    from models.train import Trainer, TrainOptions

    labels = _recordings(tmp_path)
    result = CliRunner().invoke(app, [
        "dataset", "build", "--recordings", str(tmp_path), "--labels", str(labels), "--text-encoder",
        str(tiny_encoder), "--out", str(tmp_path / "set.pkl"), "--compact-text", "--progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    bar = finished_bar(result.stderr, "features")
    assert bar and bar[2] == "6", result.stderr
    quiet = CliRunner().invoke(app, [
        "dataset", "build", "--recordings", str(tmp_path), "--labels", str(labels), "--text-encoder",
        str(tiny_encoder), "--out", str(tmp_path / "quiet.pkl"), "--compact-text", "--no-progress",
    ])  # fmt: skip
    assert quiet.exit_code == 0 and "features:" not in quiet.stderr

    splits = load_mmsa_pickle(tmp_path / "set.pkl")
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_encoder, audio_dim=splits["train"].audio_dim,
                                 vision_dim=splits["train"].vision_dim, batch_size=2, update_epochs=1)
    torch.manual_seed(0)
    capsys.readouterr()
    Trainer(config, TrainOptions(max_epochs=2, device="cpu", progress=True)).fit(
        SelfMM(config), MMSADataset(splits["train"]), MMSADataset(splits["valid"])
    )
    err = capsys.readouterr().err
    for desc, batches in [("init labels", "2"), ("epoch 1 train", "2"), ("epoch 1 valid", "1"),
                          ("epoch 2 train", "2"), ("epoch 2 valid", "1")]:
        bar = finished_bar(err, desc)
        assert bar and bar[2] == batches, (desc, err)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # correlations over one or two samples are undefined
def test_model_build_shows_each_phase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_threads: None) -> None:
    """A tiny default-model build (2 sentences per corpus and split, 2 CREMA-D clips per split, 1 epoch, no
    export) with progress on."""
    monkeypatch.chdir(REPO_ROOT)  # the corpus cache (.affectstream/cache/vader) is relative to the repository
    result = CliRunner().invoke(app, [
        "model", "build", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), "--no-export",
        "--sentences-per-corpus", "2", "--spoken-per-split", "1", "--clips-per-split", "2", "--max-epochs", "1",
        "--workers", "1", "--progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = {"train: speech + features": "4", "valid: speech + features": "4", "test: speech + features": "8",
                "init labels": "1", "epoch 1 train": "1", "epoch 1 valid": "1", "test": "1",
                # the voices, once as the file decodes, through a call's codec and with a room's hum
                "CREMA-D voices: features (file)": "6", "CREMA-D voices: features (opus-voip-96k)": "6",
                "CREMA-D voices: features (room-hum)": "6"}
    for desc, total in expected.items():
        bar = finished_bar(result.stderr, desc)
        assert bar and bar[2] == total, (desc, result.stderr)
