"""Scores vs labelled segments: matching, per-segment predictions, MMSA metrics, latency statistics (sans-IO).

Matching rule (documented in the report too):
1. A scored window belongs to the labelled file whose name its stream's `call_id` gives (replay names streams
   after their source file, see `agent.file_source.call_id_for`). Shed windows carry no score and are ignored.
2. Among that file's segments, the window is matched to the one it overlaps most in media time, provided the
   overlap is at least `MIN_OVERLAP_FRACTION` (50 %) of the window's duration; otherwise it is unmatched.
3. A segment's prediction is the mean of its matched windows' outputs, each weighted by the seconds it
   overlaps the segment (a duration-weighted mean). Segments with no matched window get no prediction and are
   left out of the metrics (they are counted and listed).
Metrics are `core.task_metrics.task_metrics` on (prediction, label) per segment: MMSA's regression metrics for
sentiment (MOSI/MOSEI-style on a -3..3 scale, SIMS-style on -1..1), PHQ-8 metrics for depression.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.file_source import call_id_candidates
from agent.messages import V1_SESSION
from core.errors import ConfigError
from core.labels import LabelRow
from core.task_metrics import task_metrics

MIN_OVERLAP_FRACTION = 0.5
MATCHING_RULE = (
    "each scored window is matched to the labelled segment of the same file (stream call_id = file name) "
    f"that it overlaps most, if the overlap is at least {MIN_OVERLAP_FRACTION:.0%} of the window; "
    "a segment's prediction is the overlap-duration-weighted mean of its matched windows' outputs; "
    "segments without a matched window are left out of the metrics"
)
HEADS = ("m", "t", "a", "v")


@dataclass(frozen=True, slots=True)
class WindowScore:
    stream_key: str
    call_id: str
    seq: int
    start_s: float
    end_s: float
    outputs: dict[str, float]  # head -> value (m always; t, a, v when the model gives them)
    task: str
    label_min: float
    label_max: float
    latencies_ms: dict[str, float]
    session: str = V1_SESSION  # the ingest session (schema v2); a reconnect is a new session

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class SegmentResult:
    segment: LabelRow
    windows: tuple[tuple[WindowScore, float], ...]  # matched windows with their overlap, s
    predictions: dict[str, float]  # head -> duration-weighted mean (empty when no window matched)


def windows_from_messages(messages: Iterable[dict[str, Any]], task: str | None = None) -> list[WindowScore]:
    """Scored windows of affect.scores messages (one task), deduplicated by (stream key, session, seq), in order.

    The messages follow the schema (the readers check it); values no schema states are checked here: a
    window ends after it starts, the scale is a range, and every number is finite (JSON read by Python
    may hold NaN). ConfigError names the window."""
    found: dict[tuple[str, str, int], WindowScore] = {}
    for message in messages:
        if message.get("shed") or not message.get("scores"):
            continue
        chosen = [s for s in message["scores"] if task is None or s["task"] == task]
        if not chosen:
            continue
        score = chosen[0]
        outputs = {h: float(score[h]) for h in HEADS if score.get(h) is not None}
        stream = message["stream"]
        session = str(message.get("session", V1_SESSION))
        key = (stream["key"], session, int(message["seq"]))
        window = WindowScore(
            stream["key"], stream["call_id"], int(message["seq"]), float(message["start_s"]),
            float(message["end_s"]), outputs, score["task"], float(score["label_min"]),
            float(score["label_max"]),
            {k: float(v) for k, v in message.get("latencies_ms", {}).items()}, session,
        )  # fmt: skip
        _check_window(window)
        found[key] = window
    tasks = {w.task for w in found.values()}
    if task is None and len(tasks) > 1:
        names = ", ".join(sorted(tasks))
        raise ConfigError(f"the scores hold several tasks ({names}): choose one with --task")
    return sorted(found.values(), key=lambda w: (w.stream_key, w.session, w.seq))


def _check_window(window: WindowScore) -> None:
    where = f"scores of {window.stream_key} seq {window.seq}"
    numbers = {"start_s": window.start_s, "end_s": window.end_s, "label_min": window.label_min,
               "label_max": window.label_max, **window.outputs, **window.latencies_ms}  # fmt: skip
    bad = [name for name, value in numbers.items() if not math.isfinite(value)]
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} not a finite number")
    if not 0 <= window.start_s <= window.end_s:
        raise ConfigError(f"{where}: need 0 <= start_s <= end_s, got {window.start_s} and {window.end_s}")
    if not window.label_min < window.label_max:
        raise ConfigError(f"{where}: label_min {window.label_min:g} is not below label_max {window.label_max:g}")


def check_label_scale(segments: list[LabelRow], windows: list[WindowScore], labels_source: str) -> None:
    """Every label lies on the scores' scale (label_min..label_max): a label off it cannot be compared."""
    low, high = windows[0].label_min, windows[0].label_max
    for segment in segments:
        for head, value in segment.labels.items():
            if not low <= value <= high:
                column = "label" if head == "m" else f"label_{head.upper()}"
                raise ConfigError(
                    f"{labels_source}:{segment.line}: {column} {value:g} is outside the scale of the "
                    f"{windows[0].task} scores [{low:g}, {high:g}]"
                )


def overlap_s(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def match(windows: list[WindowScore], segments: list[LabelRow]) -> list[SegmentResult]:
    """Apply the matching rule; one result per segment, in label order."""
    by_call: dict[str, list[int]] = {}
    for index, segment in enumerate(segments):
        for call_id in call_id_candidates(segment.file):
            by_call.setdefault(call_id, []).append(index)
    matched: dict[int, list[tuple[WindowScore, float]]] = {i: [] for i in range(len(segments))}
    for window in windows:
        overlaps = [
            (overlap_s(window.start_s, window.end_s, segments[i].start_s, segments[i].end_s), i)
            for i in by_call.get(window.call_id, [])
        ]
        if not overlaps or window.duration_s <= 0:
            continue
        overlap, best = max(overlaps, key=lambda pair: pair[0])  # ties: the first segment in label order
        if overlap >= MIN_OVERLAP_FRACTION * window.duration_s:
            matched[best].append((window, overlap))
    return [SegmentResult(seg, tuple(matched[i]), _weighted(matched[i])) for i, seg in enumerate(segments)]


def _weighted(pairs: list[tuple[WindowScore, float]]) -> dict[str, float]:
    if not pairs:
        return {}
    heads = set.intersection(*(set(w.outputs) for w, _ in pairs))
    total = sum(overlap for _, overlap in pairs)
    return {h: sum(w.outputs[h] * overlap for w, overlap in pairs) / total for h in HEADS if h in heads}


def default_dataset(windows: list[WindowScore]) -> str:
    """MMSA metric flavour from the model's label range: SIMS-style on -1..1, else MOSI-style."""
    if windows and windows[0].label_min >= -1.0 and windows[0].label_max <= 1.0:
        return "sims"
    return "mosi"


def segment_metrics(results: list[SegmentResult], *, task: str, dataset: str) -> dict[str, dict[str, float]]:
    """Metrics per head (m = multimodal, t/a/v = unimodal against label_T/A/V) over matched segments."""
    out: dict[str, dict[str, float]] = {}
    for head in HEADS:
        pairs = [(r.predictions[head], r.segment.labels[head]) for r in results
                 if head in r.predictions and head in r.segment.labels]
        if pairs:
            pred, true = zip(*pairs, strict=True)
            out[head] = task_metrics(np.array(pred), np.array(true), task=task, dataset=dataset)
    return out


def latency_stats(windows: list[WindowScore]) -> dict[str, dict[str, float]]:
    """p50, p95, max and mean per pipeline stage and for their sum ("total"), milliseconds."""
    per_stage: dict[str, list[float]] = {}
    for window in windows:
        for stage, ms in window.latencies_ms.items():
            per_stage.setdefault(stage, []).append(ms)
        per_stage.setdefault("total", []).append(sum(window.latencies_ms.values()))
    return {stage: _stats(values) for stage, values in per_stage.items()}


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "max": round(float(array.max()), 3),
        "mean": round(float(array.mean()), 3),
        "n": len(values),
    }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One run's scores judged against the labels."""

    name: str
    windows: list[WindowScore]
    results: list[SegmentResult]
    task: str
    dataset: str
    metrics: dict[str, dict[str, float]]  # head -> metric -> value
    latency_ms: dict[str, dict[str, float]]

    @property
    def matched_windows(self) -> int:
        return sum(len(r.windows) for r in self.results)

    @property
    def matched_segments(self) -> int:
        return sum(1 for r in self.results if r.predictions)


def evaluate(
    messages: Iterable[dict[str, Any]], segments: list[LabelRow], *, name: str = "run",
    task: str | None = None, dataset: str | None = None, labels_source: str = "labels",
) -> Evaluation:
    """Match, predict per segment, and compute the task's metrics; ConfigError when nothing matches or a
    value cannot be judged (see `windows_from_messages`, `check_label_scale`)."""
    windows = windows_from_messages(messages, task)
    if not windows:
        raise ConfigError(f"{name}: no scored windows" + (f" for task {task!r}" if task else ""))
    check_label_scale(segments, windows, labels_source)
    task_name = windows[0].task
    results = match(windows, segments)
    if not any(r.predictions for r in results):
        files = ", ".join(sorted({s.file for s in segments}))
        streams = ", ".join(sorted({w.call_id for w in windows}))
        raise ConfigError(f"{name}: no window matches a labelled segment (labels name {files}; scores have "
                          f"streams {streams})")
    flavour = dataset or default_dataset(windows)
    metrics = segment_metrics(results, task=task_name, dataset=flavour)
    return Evaluation(name, windows, results, task_name, flavour, metrics, latency_stats(windows))
