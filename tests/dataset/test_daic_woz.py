"""DAIC-WOZ adapter on a tiny interview directory in the corpus layout (espeak-ng speech), end to end."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from dataset_testing import train_one_epoch

from core.errors import ConfigError, MediaError
from core.labels import LabelsError
from models.adapters.daic_woz import Turn, merge_turns, participant_turns, write_labels
from models.dataset_builder import build_dataset

SENTENCES = {
    "q": "How have you been feeling lately?",
    "a1": "I have been sleeping badly for two weeks.",
    "a2": "Nothing really helps.",
    "a3": "Things are going much better since we changed the medication.",
}
# participant id -> (split file, PHQ-8 score)
PARTICIPANTS = {"300": ("train", 3), "301": ("train", 16), "302": ("dev", 11), "303": ("test", 20)}
SPLIT_FILES = {
    "train": ("train_split_Depression_AVEC2017.csv", "PHQ8_Score"),
    "dev": ("dev_split_Depression_AVEC2017.csv", "PHQ8_Score"),
    "test": ("full_test_split.csv", "PHQ_Score"),
}


def _speak(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(path), text], check=True, timeout=60)
    samples, rate = sf.read(path, dtype="float32")
    assert rate == 22050
    return samples


def _interview(folder: Path, pid: str, speech: dict[str, np.ndarray]) -> None:
    """Ellie asks, the participant answers twice in a row (0.2 s apart), laughs, then answers again."""
    script = [
        ("Ellie", "q", 0.6), ("Participant", "a1", 0.7), ("Participant", "a2", 0.2),
        ("Participant", "<laughter>", 0.8), ("Ellie", "q", 0.8), ("Participant", "a3", 0.7),
    ]  # fmt: skip
    rate, pieces, rows, clock_s = 22050, [], [], 0.0
    for speaker, key, gap_s in script:
        pieces.append(np.zeros(int(gap_s * rate), dtype=np.float32))
        clock_s += gap_s
        audio = speech[key] if key in speech else np.zeros(int(0.5 * rate), dtype=np.float32)
        pieces.append(audio)
        text = SENTENCES.get(key, key).lower().rstrip("?.")
        rows.append((round(clock_s, 3), round(clock_s + len(audio) / rate, 3), speaker, text))
        clock_s += len(audio) / rate
    pieces.append(np.zeros(rate // 2, dtype=np.float32))
    folder.mkdir(parents=True)
    sf.write(folder / f"{pid}_AUDIO.wav", np.concatenate(pieces), rate, subtype="PCM_16")
    with open(folder / f"{pid}_TRANSCRIPT.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["start_time", "stop_time", "speaker", "value"])
        writer.writerows(rows)


@pytest.fixture(scope="module")
def daic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("daic_woz")
    speech = {key: _speak(text, root / f"{key}.wav") for key, text in SENTENCES.items()}
    for pid in PARTICIPANTS:
        _interview(root / f"{pid}_P", pid, speech)
    for split, (name, column) in SPLIT_FILES.items():
        with open(root / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["Participant_ID", "PHQ8_Binary" if column == "PHQ8_Score" else "PHQ_Binary", column]
            )
            for pid, (where, score) in PARTICIPANTS.items():
                if where == split:
                    writer.writerow([pid, int(score >= 10), score])
    return root


@pytest.mark.parametrize(
    "turns, expected",
    [
        ([Turn(0, 2, "a"), Turn(2.3, 4, "b")], [Turn(0, 4, "a b")]),  # close turns merge
        ([Turn(0, 2, "a"), Turn(3, 4, "b")], [Turn(0, 2, "a"), Turn(3, 4, "b")]),  # a pause splits
        ([Turn(0, 10, "a"), Turn(10.1, 16, "b")], [Turn(0, 10, "a"), Turn(10.1, 16, "b")]),  # max length
        ([Turn(0, 0.5, "a"), Turn(5, 7, "")], []),  # too short; no words
    ],
)
def test_merge_turns(turns: list[Turn], expected: list[Turn]) -> None:
    assert merge_turns(turns, merge_gap_s=0.5, min_length_s=1.0, max_length_s=15.0) == expected


def test_labels_are_participant_windows_with_phq8(daic_root: Path, tmp_path: Path) -> None:
    turns = participant_turns(daic_root / "300_P/300_TRANSCRIPT.csv")
    assert [t.text for t in turns] == [
        "i have been sleeping badly for two weeks", "nothing really helps", "",
        "things are going much better since we changed the medication",
    ]  # fmt: skip
    count = write_labels(daic_root, tmp_path / "labels.csv")
    with open(tmp_path / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert count == len(rows) == 2 * len(PARTICIPANTS)  # a1+a2 merged, laughter dropped, a3
    for row in rows:
        pid = row["file"].split("_")[0]
        split, score = PARTICIPANTS[pid]
        assert float(row["label"]) == score and row["split"] == {"dev": "valid"}.get(split, split)
        assert "feeling" not in row["text"]  # Ellie's words never label the participant
    assert rows[0]["text"] == "i have been sleeping badly for two weeks nothing really helps"
    assert float(rows[0]["end_s"]) - float(rows[0]["start_s"]) > 2.0


def test_missing_split_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no DAIC-WOZ split file"):
        write_labels(tmp_path, tmp_path / "labels.csv")


def test_daic_woz_pickle_trains_one_epoch(daic_root: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    write_labels(daic_root, tmp_path / "labels.csv")
    summary = build_dataset(
        daic_root, tmp_path / "labels.csv", tiny_encoder, tmp_path / "daic.pkl", vision_fps=10.0
    )
    assert {name: s["count"] for name, s in summary["splits"].items()} == {"train": 4, "valid": 2, "test": 2}
    assert summary["splits"]["train"]["mean_speech_ratio"] > 0.3
    assert summary["splits"]["train"]["mean_face_visible_ratio"] == 0.0  # audio-only interviews
    assert json.loads((tmp_path / "daic.pkl.json").read_text()) == summary
    with open(tmp_path / "daic.pkl", "rb") as handle:
        data = pickle.load(handle)
    train = data["train"]
    assert sorted(set(train["regression_labels"].tolist())) == [3.0, 16.0]
    assert np.all(train["vision_lengths"] == 1) and not train["vision"].any()  # the explicit "no face" input
    assert np.all(train["audio_lengths"] > 100)  # > 2 s at 50 frames/s
    result, _, _ = train_one_epoch(tmp_path / "daic.pkl", tiny_encoder, task="depression")
    assert result.epochs == 1 and np.isfinite(result.history[0]["train_loss"])


@pytest.mark.integration
def test_whisper_transcribes_segments_without_text(
    daic_root: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    write_labels(daic_root, tmp_path / "with_text.csv")
    with open(tmp_path / "with_text.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["file"].startswith("300_")]
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "text": "", "split": "train"} for row in rows)
    result = CliRunner().invoke(app, [
        "dataset", "build", "--recordings", str(daic_root), "--labels", str(tmp_path / "labels.csv"),
        "--text-encoder", str(tiny_encoder), "--out", str(tmp_path / "whisper.pkl"), "--whisper",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(tmp_path / "whisper.pkl", "rb") as handle:
        texts = [t.lower() for t in pickle.load(handle)["train"]["raw_text"]]
    assert "sleeping badly" in texts[0] and "helps" in texts[0] and "medication" in texts[1]
    summary = json.loads((tmp_path / "whisper.pkl.json").read_text())
    assert summary["transcripts"] == "whisper"


def test_segments_without_text_need_whisper(daic_root: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,start_s,end_s,label,split\n300_P/300_AUDIO.wav,0,2,3,train\n", encoding="utf-8")
    with pytest.raises(LabelsError, match="line 2: no text"):
        build_dataset(daic_root, labels, tiny_encoder, tmp_path / "x.pkl", vision_fps=10.0)
    labels.write_text(
        "file,start_s,end_s,label,text,split\nmissing.wav,0,2,3,hi,train\n300_P/300_AUDIO.wav,0,2,3,hi,train\n",
        encoding="utf-8",
    )
    with pytest.raises(MediaError, match="missing.wav: no such file"):
        build_dataset(daic_root, labels, tiny_encoder, tmp_path / "x.pkl", vision_fps=10.0)
    assert not (tmp_path / "x.pkl").exists()
    summary = build_dataset(
        daic_root, labels, tiny_encoder, tmp_path / "x.pkl", vision_fps=10.0, skip_bad=True
    )
    assert summary["splits"]["train"]["count"] == 1 and len(summary["skipped"]) == 1
    assert "line 2" in summary["skipped"][0] and "no such file" in summary["skipped"][0]
