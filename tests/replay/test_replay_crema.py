"""Replay the six-emotion CREMA-D recording end to end: CLI replay to JSON lines and a real broker,
determinism, and an evaluation report whose numbers are checked against a hand computation on the same
scores."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from replay_testing import CREMA_MIX
from typer.testing import CliRunner

from agent.broker import EmbeddedBroker
from agent.replay import run_replay
from agent.settings import KafkaSettings, Settings
from agent.topic_reader import read_topic
from cli.main import app
from models.adapters.crema_d import vote_valence

pytestmark = pytest.mark.integration  # real Whisper, ONNX Runtime, broker

EMOTION_CODES = {"neutral": "N", "happy": "H", "sad": "S", "anger": "A", "fear": "F", "disgust": "D"}


def labels_from_manifest(
    manifest: list[dict[str, str]], path: Path, out: Path
) -> list[tuple[float, float, float]]:
    """'segments: neutral 0.000-2.035; ...' -> labels CSV rows (valence as the CREMA-D adapter maps it)."""
    (row,) = [r for r in manifest if r["path"] == path.as_posix()]
    segments = []
    for name, start, end in re.findall(r"(\w+) ([\d.]+)-([\d.]+)", row["label"]):
        segments.append((float(start), float(end), vote_valence(EMOTION_CODES[name], "100")))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "start_s", "end_s", "label"])
        writer.writerows([path.as_posix(), s, e, label] for s, e, label in segments)
    return segments


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def runs(replay_bundle: Path, kafka_broker: EmbeddedBroker, shared_data: Path,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same file replayed twice in fast mode: once by the CLI (JSON lines + Kafka), once in-process."""
    work = tmp_path_factory.mktemp("crema-replay")
    topic = f"affect.replay.scores.{uuid.uuid4().hex[:8]}"
    env = {
        "AFFECTSTREAM_SCORING__BUNDLES": json.dumps([str(replay_bundle)]),
        "AFFECTSTREAM_SCORING__PROVIDERS": '["CPUExecutionProvider"]',
        "AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "AFFECTSTREAM_PUBLISH__SPOOL_DIR": str(work / "spool"),
    }
    media = shared_data / CREMA_MIX
    cli = CliRunner().invoke(app, ["replay", str(media), "--output", str(work / "a.jsonl"), "--topic", topic,
                                   "--no-progress"], env=env)
    assert cli.exit_code == 0, cli.output
    settings = Settings(scoring={"bundles": [replay_bundle], "providers": ["CPUExecutionProvider"]})
    summary = asyncio.run(
        run_replay([media], settings, output=work / "b.jsonl", publish=False, progress=False)
    )
    return {"work": work, "topic": topic, "env": env, "cli_output": cli.output, "summary": summary}


def test_replaying_twice_in_fast_mode_gives_identical_windows_and_scores(runs: dict[str, Any]) -> None:
    a, b = read_lines(runs["work"] / "a.jsonl"), read_lines(runs["work"] / "b.jsonl")
    assert len(a) >= 5  # six spoken sentences, one after another
    def key(m: dict[str, Any]) -> tuple[Any, ...]:
        return m["stream"]["key"], m["seq"], m["start_s"], m["end_s"], m["closed_by"], m["scores"]
    assert [key(m) for m in a] == [key(m) for m in b]
    assert all(m["replay"] and not m["shed"] and m["stream"]["call_id"] == CREMA_MIX.name for m in a)
    summary = runs["summary"]
    assert summary.ok and summary.files[0].scored == len(b)
    assert summary.media_s == pytest.approx(12.647, abs=0.01)
    assert "real-time factor" in runs["cli_output"]


def test_json_lines_carry_the_kafka_messages(runs: dict[str, Any], kafka_broker: EmbeddedBroker) -> None:
    on_kafka = [r.message for r in read_topic(KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers),
                                              runs["topic"])]
    lines = read_lines(runs["work"] / "a.jsonl")
    strip = lambda m: {k: v for k, v in m.items() if k != "produced_at"}  # noqa: E731 - stamped per send
    assert sorted((strip(m) for m in on_kafka), key=lambda m: m["seq"]) == [strip(m) for m in lines]


def test_report_numbers_match_a_hand_computation(
    runs: dict[str, Any], manifest: list[dict[str, str]]
) -> None:
    work = runs["work"]
    segments = labels_from_manifest(manifest, CREMA_MIX, work / "labels.csv")
    assert [label for *_, label in segments] == [0.0, 3.0, -3.0, -3.0, -3.0, -3.0]
    cli = CliRunner().invoke(app, ["evaluate", "--scores", str(work / "a.jsonl"), "--labels",
                                   str(work / "labels.csv"), "--out", str(work / "report")], env=runs["env"])
    assert cli.exit_code == 0, cli.output
    report = json.loads((work / "report" / "report.json").read_text("utf-8"))

    # By hand: each window goes to the segment it overlaps most (>= half the window), overlap-weighted mean.
    sums = [[0.0, 0.0] for _ in segments]
    latencies = []
    for m in read_lines(work / "a.jsonl"):
        overlaps = [max(0.0, min(m["end_s"], e) - max(m["start_s"], s)) for s, e, _ in segments]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= 0.5 * (m["end_s"] - m["start_s"]):
            sums[best][0] += m["scores"][0]["m"] * overlaps[best]
            sums[best][1] += overlaps[best]
        latencies.append(sum(m["latencies_ms"].values()))
    kept = [i for i, (_, weight) in enumerate(sums) if weight > 0]
    pred = np.array([sums[i][0] / sums[i][1] for i in kept])
    true = np.array([segments[i][2] for i in kept])
    got = report["run"]["metrics"]["m"]
    assert report["run"]["counts"]["matched_segments"] == len(kept) >= 5
    assert got["MAE"] == pytest.approx(np.mean(np.abs(pred - true)), abs=1e-4)
    assert got["Corr"] == pytest.approx(np.corrcoef(pred, true)[0, 1], abs=1e-4)
    assert got["Has0_acc_2"] == pytest.approx(np.mean((pred >= 0) == (true >= 0)), abs=1e-4)
    nonzero = true != 0
    assert got["Non0_acc_2"] == pytest.approx(np.mean((pred[nonzero] > 0) == (true[nonzero] > 0)), abs=1e-4)
    assert got["Mult_acc_7"] == pytest.approx(
        np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(true, -3, 3))), abs=1e-4)
    for seg, expected in zip([report["run"]["segments"][i] for i in kept], pred, strict=True):
        assert seg["predictions"]["m"] == pytest.approx(expected, abs=1e-9)
    total = report["run"]["latency_ms"]["total"]
    assert total["p50"] == pytest.approx(np.percentile(latencies, 50), abs=1e-3)
    assert total["max"] == pytest.approx(max(latencies), abs=1e-3)
    markdown = (work / "report" / "report.md").read_text("utf-8")
    assert f"| MAE | {got['MAE']:.4f} |" in markdown and "## Segments" in markdown


def test_report_plots_exist_and_are_not_blank(runs: dict[str, Any], manifest: list[dict[str, str]]) -> None:
    work = runs["work"]
    labels_from_manifest(manifest, CREMA_MIX, work / "labels2.csv")
    args = ["evaluate", "--topic", runs["topic"], "--labels", str(work / "labels2.csv"),
            "--out", str(work / "kafka-report"), "--compare", str(work / "b.jsonl")]
    cli = CliRunner().invoke(app, args, env=runs["env"])
    assert cli.exit_code == 0, cli.output
    report = json.loads((work / "kafka-report" / "report.json").read_text("utf-8"))
    diff = report["compare"]["windows"]
    assert diff["identical_scores"] and diff["moved_windows"] == 0
    assert report["run"]["metrics"] == report["compare"]["run"]["metrics"]
    names = report["plots"]
    assert {"scatter.png", "segments.png", f"timeline_{CREMA_MIX.name}.png"} <= set(names)
    for name in names:
        with Image.open(work / "kafka-report" / name) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        assert pixels.shape[0] >= 200 and pixels.shape[1] >= 400
        assert pixels.std() > 5.0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_a_part_of_a_file_replays_in_its_own_media_time(replay_bundle: Path, shared_data: Path,
                                                         tmp_path: Path) -> None:
    settings = Settings(scoring={"bundles": [replay_bundle], "providers": ["CPUExecutionProvider"]})
    out = tmp_path / "part.jsonl"
    summary = asyncio.run(run_replay([shared_data / CREMA_MIX], settings, from_s=3.904, to_s=8.141,
                                     output=out, publish=False, progress=True))
    windows = read_lines(out)
    assert summary.ok and summary.media_s == pytest.approx(8.141 - 3.904, abs=1e-6)
    assert len(windows) >= 2 and windows[0]["seq"] == 0
    assert all(3.904 - 1e-6 <= m["start_s"] < m["end_s"] <= 8.141 + 1e-6 for m in windows)
