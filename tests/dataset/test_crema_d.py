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
from core.errors import ConfigError
from models.adapters.crema_d import (
    NEUTRAL_VOICE_OFFSET,
    CremaClip,
    assign_splits,
    raw_voice_valence,
    read_clips,
    read_summary,
    voice_valence,
    vote_valence,
)
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
    media = shared_data / "av/crema_d"
    return labelled_pickle(media, media, tiny_encoder, tmp_path_factory.mktemp("crema") / "crema.pkl")


def labelled_pickle(media: Path, recordings: Path, encoder: Path, out: Path) -> Path:
    """`dataset crema-d` on `media` (labels.csv beside `out`), then `dataset build` of `recordings` into `out`."""
    runner = CliRunner()
    labels = out.parent / "labels.csv"
    result = runner.invoke(app, ["dataset", "crema-d", "--media", str(media), "--out", str(labels)])
    assert result.exit_code == 0 and " clips)" in result.output, result.output
    result = runner.invoke(app, [
        "dataset", "build", "--recordings", str(recordings), "--labels", str(labels),
        "--text-encoder", str(encoder), "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


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


# --- the shared corpus folder (clips.csv + Opus voices, fixed actor splits) ---

CLIP_HEADER = ("file,actor,split,sentence,intended_emotion,intended_level,"
               + ",".join(f"voice_{c}" for c in "ADFHNS") + ",voice_n")


def _clip(votes: dict[str, int], n: int) -> CremaClip:
    full = {c: votes.get(c, 0) for c in "ADFHNS"}
    return CremaClip("audio/x.opus", "1001", "test", "s", "happy", "unspecified", full, n)


@pytest.mark.parametrize(
    "votes, n, raw",
    [({"H": 9}, 9, 3.0), ({"A": 9}, 9, -3.0), ({"N": 10}, 10, 0.0), ({"H": 3, "S": 3, "N": 3}, 9, 0.0),
     ({"A": 2, "D": 1, "F": 1, "S": 1, "N": 5}, 10, -1.5)],
)
def test_voice_valence_is_the_mean_raters_valence_centred_on_neutral(votes: dict[str, int], n: int,
                                                                      raw: float) -> None:
    assert raw_voice_valence(_clip(votes, n).voice_votes, n) == pytest.approx(raw)
    expected = min(3.0, max(-3.0, raw - NEUTRAL_VOICE_OFFSET))
    assert voice_valence(_clip(votes, n)) == pytest.approx(expected, abs=1e-4)


def test_clips_table_has_fixed_actor_splits_and_the_documented_offset(shared_data: Path) -> None:
    clips = read_clips(shared_data / "cremad" / "clips.csv")
    assert len(clips) == 6704
    actors: dict[str, set[str]] = {}
    for clip in clips:
        actors.setdefault(clip.actor, set()).add(clip.split)
    assert all(len(splits) == 1 for splits in actors.values()) and actors["1001"] == {"test"}
    assert {s: sum(len(v) == 1 and s in v for v in actors.values()) for s in ("train", "valid", "test")} == {
        "train": 65, "valid": 8, "test": 9}
    neutral = [raw_voice_valence(c.voice_votes, c.voice_n) for c in clips
               if c.split == "train" and c.emotion == "neutral"]
    assert abs(float(np.mean(neutral)) - NEUTRAL_VOICE_OFFSET) < 0.05  # the constant is the train mean
    by_emotion = {e: np.mean([voice_valence(c) for c in clips if c.emotion == e]) for e in
                  ("happy", "neutral", "anger", "sad")}
    assert by_emotion["happy"] > by_emotion["neutral"] > by_emotion["sad"] > by_emotion["anger"]


def test_a_malformed_clips_row_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "clips.csv"
    path.write_text(CLIP_HEADER + "\naudio/a.opus,1001,test,s,happy,XX,1,0,0,5,1,0,7\n"
                    "audio/b.opus,1001,tset,s,happy,XX,1,0,0,5,1,0,7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"clips.csv:3: .*tset"):
        read_clips(path)
    path.write_text(CLIP_HEADER + "\naudio/a.opus,1001,test,s,happy,XX,1,0,0,5,1,0,3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"clips.csv:2: 7 voice votes for 3 ratings"):
        read_clips(path)


@pytest.fixture(scope="module")
def voices_pickle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tiny_encoder: Path) -> Path:
    """A handful of real clips (two per split) → `dataset crema-d` on a clips.csv folder → `dataset build`."""
    corpus = shared_data / "cremad"
    out = tmp_path_factory.mktemp("voices")
    lines = (corpus / "clips.csv").read_text(encoding="utf-8").splitlines()
    keep = [lines[0]] + [next(line for line in lines[1:] if f",{split}," in line and emotion in line)
                         for split in ("train", "valid", "test") for emotion in ("_HAP_", "_ANG_")]
    subset = out / "corpus"
    subset.mkdir()
    (subset / "clips.csv").write_text("\n".join(keep) + "\n", encoding="utf-8")
    return labelled_pickle(subset, corpus, tiny_encoder, out / "voices.pkl")


def test_voices_build_a_dataset_labelled_by_the_voice_and_train_one_epoch(
    voices_pickle: Path, tiny_encoder: Path, shared_data: Path
) -> None:
    splits = load_mmsa_pickle(voices_pickle)
    assert {name: len(split.ids) for name, split in splits.items()} == {"train": 2, "valid": 2, "test": 2}
    clips = {c.name: c for c in read_clips(shared_data / "cremad" / "clips.csv")}
    for split in splits.values():
        for clip_id, label, n_audio in zip(split.ids, split.labels, split.audio_lengths, strict=True):
            clip = clips[Path(clip_id.split("$_$")[0]).name]
            assert label == pytest.approx(voice_valence(clip), abs=1e-4)
            assert n_audio > 50  # seconds of real speech at 50 frames/s, not an empty window
    result, before, after = train_one_epoch(voices_pickle, tiny_encoder)
    assert result.epochs == 1 and np.isfinite(result.history[0]["train_loss"])
    moved = [k for k in after if not np.array_equal(before[k].numpy(), after[k].numpy())]
    assert any(k.startswith("audio_model") for k in moved)
