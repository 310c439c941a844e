"""LMF, TFN and MulT, each trained and exported with the CLI, score a real recording through the replay path: every
window carries each model's m and null t/a/v. `evaluate --compare` sets a Self-MM bundle against the LMF bundle
on the same recording, window by window."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from baseline_testing import BASELINES, cli, trained_bundle, write_live_pickle
from replay_testing import CREMA_MIX
from tiny_selfmm import make_tiny_encoder

from agent.replay import run_replay
from agent.settings import Settings
from models.adapters.crema_d import vote_valence

pytestmark = pytest.mark.integration  # real Whisper, ONNX Runtime, the CLI's training and export

EMOTION_CODES = {"neutral": "N", "happy": "H", "sad": "S", "anger": "A", "fear": "F", "disgust": "D"}


def _replay(media: Path, bundles: list[Path], output: Path, spool: Path) -> None:
    settings = Settings(
        scoring={"bundles": bundles, "providers": ["CPUExecutionProvider"]}, publish={"spool_dir": spool}
    )
    summary = asyncio.run(run_replay([media], settings, output=output, publish=False, progress=False))
    assert summary.ok, summary.table()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def replayed(replay_bundle: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("baselines-replay")
    encoder = make_tiny_encoder(root / "encoder")
    data = write_live_pickle(encoder, root / "data.pkl", seed=4)
    bundles = [trained_bundle(model, root, encoder, data) for model in BASELINES]
    media = shared_data / CREMA_MIX
    _replay(media, bundles, root / "baselines.jsonl", root / "spool")
    _replay(media, [replay_bundle], root / "selfmm.jsonl", root / "spool")
    return {
        "root": root,
        "media": media,
        "baselines": _lines(root / "baselines.jsonl"),
        "selfmm": _lines(root / "selfmm.jsonl"),
    }


def test_every_window_has_each_models_m_and_null_unimodal_scores(replayed: dict[str, Any]) -> None:
    windows = replayed["baselines"]
    assert len(windows) >= 5  # six sentences, one after another
    for window in windows:
        assert not window["shed"]
        scores = window["scores"]
        assert [s["model_id"].split("-")[0] for s in scores] == list(BASELINES), scores
        for score in scores:
            assert score["task"] == "sentiment" and math.isfinite(score["m"])
            assert score["t"] is None and score["a"] is None and score["v"] is None  # in the message, as null
    for index in range(len(BASELINES)):  # each model scores the windows differently from window to window
        assert len({round(w["scores"][index]["m"], 6) for w in windows}) > 1
    # the segmentation is the models' business no more than it is Self-MM's: the same windows
    key = [(w["seq"], w["start_s"], w["end_s"]) for w in windows]
    assert key == [(w["seq"], w["start_s"], w["end_s"]) for w in replayed["selfmm"]]
    assert all(w["scores"][0]["t"] is not None for w in replayed["selfmm"])


def test_evaluate_compares_self_mm_with_lmf_on_the_same_recording(
    replayed: dict[str, Any], manifest: list[dict[str, str]]
) -> None:
    root: Path = replayed["root"]
    lmf = root / "lmf.jsonl"  # the LMF bundle's scores alone
    lmf.write_text("".join(json.dumps({**w, "scores": w["scores"][:1]}) + "\n" for w in replayed["baselines"]))
    labels = _labels(manifest, root / "labels.csv")

    output = cli(
        "evaluate",
        "--scores",
        str(root / "selfmm.jsonl"),
        "--compare",
        str(lmf),
        "--labels",
        str(labels),
        "--out",
        str(root / "report"),
    )
    assert "report:" in output
    report = json.loads((root / "report" / "report.json").read_text())
    runs = {report["run"]["name"]: report["run"], report["compare"]["run"]["name"]: report["compare"]["run"]}
    assert set(runs) == {"selfmm", "lmf"}
    for run in runs.values():
        assert run["counts"]["matched_segments"] >= 5 and set(run["metrics"]) == {"m"}
        assert {"MAE", "Corr"} <= set(run["metrics"]["m"])
    assert runs["selfmm"]["metrics"]["m"]["MAE"] != runs["lmf"]["metrics"]["m"]["MAE"]
    diff = report["compare"]["windows"]
    n = len(replayed["baselines"])
    assert diff["windows_a"] == diff["windows_b"] == diff["aligned"] == n and diff["moved_windows"] == 0
    assert diff["max_abs_m_diff"] > 0 and not diff["identical_scores"]
    expected = max(
        abs(a["scores"][0]["m"] - b["scores"][0]["m"])
        for a, b in zip(replayed["selfmm"], replayed["baselines"], strict=True)
    )
    assert diff["max_abs_m_diff"] == pytest.approx(expected)
    assert "lmf" in (root / "report" / "report.md").read_text()


def _labels(manifest: list[dict[str, str]], out: Path) -> Path:
    """The recording's six labelled takes ('segments: neutral 0.000-2.035; ...'), valence as CREMA-D's adapter."""
    (row,) = [r for r in manifest if r["path"] == CREMA_MIX.as_posix()]
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "start_s", "end_s", "label"])
        for name, start, end in re.findall(r"(\w+) ([\d.]+)-([\d.]+)", row["label"]):
            writer.writerow([CREMA_MIX.as_posix(), start, end, vote_valence(EMOTION_CODES[name], "100")])
    return out
