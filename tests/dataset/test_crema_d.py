"""CREMA-D adapter -> labels -> `affectstream dataset build` -> a pickle the trainer takes for one epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from dataset_testing import train_one_epoch
from typer.testing import CliRunner

from cli.main import app
from models.adapters.crema_d import assign_splits, read_summary, vote_valence
from models.datasets import load_mmsa_pickle


@pytest.mark.parametrize(
    "vote, level, expected",
    [
        ("H", "57.9", 3 * 0.579),
        ("N", "100", 0.0),
        ("A", "41.5", -3 * 0.415),
        ("S", "50", -1.5),
        ("A:F", "30.67:51.00", -3 * (0.3067 + 0.51) / 2),
        ("H:N", "40:40", 3 * 0.4 / 2),
    ],
)
def test_vote_valence(vote: str, level: str, expected: float) -> None:
    assert vote_valence(vote, level) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("vote, level", [("X", "50"), ("A:F", "50"), ("H", "lots")])
def test_unreadable_votes_are_refused(vote: str, level: str) -> None:
    with pytest.raises(ValueError):
        vote_valence(vote, level)


def test_summary_table_maps_perceived_votes(shared_data: Path) -> None:
    labels = read_summary(shared_data / "av/crema_d/summaryTable.csv")
    assert len(labels) > 7000
    happy_av, happy_voice, happy_face = labels["1001_DFA_HAP_XX"]
    assert happy_av > 0 and happy_voice == 0.0 and happy_face > 0  # voice heard as neutral, face as happy
    assert all(v < 0 for v in labels["1001_DFA_ANG_XX"]) and labels["1001_DFA_NEU_XX"] == (0.0, 0.0, 0.0)
    assert (
        labels["1001_DFA_SAD_XX"][0] == 0.0
    )  # perceived, not intended: raters saw the "sad" clip as neutral


def test_splits_keep_each_actor_in_one_split() -> None:
    names = [f"{actor}_DFA_{emotion}_XX" for actor in range(1001, 1021) for emotion in ("HAP", "SAD", "ANG")]
    splits = assign_splits(names, seed=3)
    for actor in range(1001, 1021):
        assert len({splits[n] for n in names if n.startswith(str(actor))}) == 1
    assert set(splits.values()) == {"train", "valid", "test"} and splits == assign_splits(names, seed=3)


@pytest.fixture(scope="module")
def crema_pickle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tiny_encoder: Path) -> Path:
    out = tmp_path_factory.mktemp("crema")
    runner = CliRunner()
    media = shared_data / "av/crema_d"
    result = runner.invoke(
        app, ["dataset", "crema-d", "--media", str(media), "--out", str(out / "labels.csv")]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [
        "dataset", "build", "--recordings", str(media), "--labels", str(out / "labels.csv"),
        "--text-encoder", str(tiny_encoder), "--out", str(out / "crema.pkl"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "crema.pkl"


def test_crema_d_pickle_has_the_mmsa_schema(crema_pickle: Path) -> None:
    import pickle

    with open(crema_pickle, "rb") as handle:
        data = pickle.load(handle)
    assert set(data) == {"train", "valid", "test"}
    with open(crema_pickle.parent / "labels.csv", newline="") as handle:
        labels = {row["file"].removesuffix(".flv"): row for row in csv.DictReader(handle)}
    n_total = 0
    for split in data.values():
        n = len(split["id"])
        n_total += n
        assert split["text"].shape == (n, 50, 32) and not split["text"].any()  # documented zero placeholder
        assert (
            split["text_bert"].shape == (n, 3, 50)
            and split["audio"].shape[0] == split["vision"].shape[0] == n
        )
        for i, clip_id in enumerate(split["id"]):
            video_id, clip = clip_id.split("$_$")
            row = labels[video_id]
            assert clip == "1" and split["raw_text"][i] == "Don't forget a jacket."
            assert split["regression_labels"][i] == np.float32(row["label"])
            assert split["regression_labels_A"][i] == np.float32(row["label_A"])
            assert split["regression_labels_V"][i] == np.float32(row["label_V"])
            assert split["regression_labels_T"][i] == 0.0
            expected = (
                "Positive"
                if float(row["label"]) > 0
                else "Negative"
                if float(row["label"]) < 0
                else "Neutral"
            )
            assert split["annotations"][i] == expected
            assert split["classification_labels"][i] == {"Negative": 0, "Neutral": 1, "Positive": 2}[expected]
    assert n_total == 6
    summary = json.loads((crema_pickle.parent / "crema.pkl.json").read_text())
    assert summary["feature_spec"]["audio_dim"] == 29 and summary["transcripts"] == "labels"
    assert all(s["mean_face_visible_ratio"] > 0.9 for s in summary["splits"].values() if s["count"])
    splits = load_mmsa_pickle(crema_pickle)  # the project's own reader accepts it
    assert splits["train"].audio_dim == 29 and splits["train"].vision_dim == 26


def test_crema_d_pickle_trains_one_epoch(crema_pickle: Path, tiny_encoder: Path) -> None:
    result, before, after = train_one_epoch(crema_pickle, tiny_encoder)
    assert result.epochs == 1 and np.isfinite(result.history[0]["train_loss"])
    assert np.isfinite(result.history[0]["valid"]["Loss"])
    moved = [k for k in after if not np.array_equal(before[k].numpy(), after[k].numpy())]
    assert any(k.startswith("audio_model") for k in moved) and any(k.startswith("video_model") for k in moved)
