"""Evaluation core: labels CSV, the matching rule, per-segment predictions, latency, run comparison."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agent.evaluate import evaluate, latency_stats, match, windows_from_messages
from agent.report import compare_windows
from core.errors import ConfigError
from core.labels import LabelRow, read_labels


def message(seq: int, start_s: float, end_s: float, m: float, *, call_id: str = "x.mp4", shed: bool = False,
            latencies: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "stream": {"call_id": call_id, "participant_id": "replay", "role": "participant",
                   "key": f"{call_id}/replay"},
        "seq": seq, "start_s": start_s, "end_s": end_s, "shed": shed,
        "scores": [] if shed else [{"task": "sentiment", "m": m, "t": m / 2, "a": None, "v": None,
                                    "label_min": -3.0, "label_max": 3.0, "model_id": "x",
                                    "model_version": "1"}],
        "latencies_ms": latencies or {"speech": 10.0, "scoring": 1.0},
    }  # fmt: skip


def segment(start_s: float, end_s: float, label: float, file: str = "data/x.mp4") -> LabelRow:
    return LabelRow(line=2, file=file, start_s=start_s, end_s=end_s, label=label, clip_id="1")


@pytest.mark.parametrize(
    ("window_s", "segments_s", "expected"),
    [
        ((0.0, 2.0), [(0.0, 2.0)], 0),  # inside
        ((1.0, 3.0), [(0.0, 2.0), (2.0, 4.0)], 0),  # equal overlap: the first segment
        ((1.0, 3.5), [(0.0, 2.0), (2.0, 4.0)], 1),  # most overlap wins
        ((0.0, 4.0), [(0.0, 1.9), (3.0, 5.0)], None),  # best overlap 1.9 s < 50 % of 4 s
        ((0.0, 4.0), [(0.0, 2.0)], 0),  # exactly 50 %: matched
        ((5.0, 6.0), [(0.0, 2.0)], None),  # no overlap
        ((5.0, 6.0), [(4.0, math.inf)], 0),  # open-ended segment
    ],
)
def test_matching_rule(window_s: tuple[float, float], segments_s: list[tuple[float, float]],
                       expected: int | None) -> None:
    windows = windows_from_messages([message(0, *window_s, 1.0)])
    results = match(windows, [segment(s, e, 0.0) for s, e in segments_s])
    owners = [i for i, r in enumerate(results) if r.windows]
    assert owners == ([] if expected is None else [expected])


def test_windows_of_other_files_and_shed_windows_are_ignored() -> None:
    windows = windows_from_messages(
        [message(0, 0.0, 1.0, 1.0, call_id="y.mp4"), message(1, 0.0, 1.0, 1.0, shed=True)]
    )
    assert [w.call_id for w in windows] == ["y.mp4"]
    assert not any(r.windows for r in match(windows, [segment(0.0, 1.0, 0.0)]))


def test_segment_prediction_is_the_overlap_weighted_mean_and_duplicates_count_once() -> None:
    messages = [message(0, 0.0, 1.0, 1.0), message(1, 1.0, 4.0, -1.0), message(1, 1.0, 4.0, -1.0),
                message(2, 4.0, 4.4, 3.0)]
    results = match(windows_from_messages(messages), [segment(0.0, 4.2, 0.5)])
    (result,) = results
    assert len(result.windows) == 3
    expected = (1.0 * 1.0 + -1.0 * 3.0 + 3.0 * 0.2) / (1.0 + 3.0 + 0.2)
    assert result.predictions["m"] == pytest.approx(expected)
    assert result.predictions["t"] == pytest.approx(expected / 2) and "a" not in result.predictions


def test_evaluate_computes_metrics_latency_and_refuses_when_nothing_matches() -> None:
    messages = [message(i, 2.0 * i, 2.0 * i + 1.5, m, latencies={"speech": 10.0 * (i + 1), "scoring": 2.0})
                for i, m in enumerate([1.2, -0.4, 2.5, -2.0])]
    segments = [segment(2.0 * i, 2.0 * i + 2.0, label) for i, label in enumerate([1.0, -1.0, 2.0, -3.0])]
    run = evaluate(messages, segments)
    assert run.metrics["m"]["MAE"] == pytest.approx((0.2 + 0.6 + 0.5 + 1.0) / 4, abs=1e-4)
    assert run.metrics["m"]["Has0_acc_2"] == 1.0 and run.dataset == "mosi"
    assert run.latency_ms["speech"]["max"] == 40.0 and run.latency_ms["total"]["p50"] == pytest.approx(27.0)
    with pytest.raises(ConfigError, match="no window matches"):
        evaluate(messages, [segment(0.0, 1.0, 0.0, file="other.mp4")])


def test_latency_percentiles() -> None:
    windows = windows_from_messages([message(i, i, i + 1.0, 0.0, latencies={"speech": float(i + 1)})
                                     for i in range(20)])
    stats = latency_stats(windows)["speech"]
    assert (stats["p50"], stats["p95"], stats["max"], stats["n"]) == (10.5, 19.05, 20.0, 20)


def test_compare_aligns_windows_by_stream_and_seq() -> None:
    a = windows_from_messages(
        [message(0, 0.0, 1.0, 0.5), message(1, 1.0, 2.0, 0.25), message(2, 2.0, 3.0, 0.0)]
    )
    b = windows_from_messages([message(0, 0.0, 1.03, 0.5), message(1, 1.1, 2.0, 0.5)])
    diff = compare_windows(a, b)
    assert (diff["aligned"], diff["only_a"], diff["only_b"]) == (2, [["x.mp4/replay", 2]], [])
    assert diff["max_boundary_diff_s"] == pytest.approx(0.1) and diff["moved_windows"] == 1
    assert diff["max_abs_m_diff"] == 0.25 and not diff["identical_scores"]
    assert compare_windows(a, a)["identical_scores"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("file,start_s,label\nx,0,1\n", "lacks column"),
        ("file,start_s,end_s,label\nx,0,1,\n", "label is empty"),
        ("file,start_s,end_s,label\nx,2,1,0\n", "need 0 <= start_s < end_s"),
        ("file,start_s,end_s,label\nx,zero,1,0\n", "column start_s is not a number"),
        ("file,start_s,end_s,label\n", "no labelled segments"),
    ],
)
def test_bad_labels_name_the_line(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment):
        read_labels(path)


def test_labels_with_unimodal_columns_and_open_end(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("file,start_s,end_s,label,label_T,label_A,label_V\na.wav,0,,1.5,0,1,\n", encoding="utf-8")
    (seg,) = read_labels(path)
    assert seg.end_s == math.inf and seg.labels == {"m": 1.5, "t": 0.0, "a": 1.0}
