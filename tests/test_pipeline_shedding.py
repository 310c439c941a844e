"""The pipeline's overload policy: live streams shed windows (and still report them), replay never does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent import messages, metrics
from agent.pipeline import Pipeline, run_stream
from agent.settings import WindowSettings
from core.types import SAMPLE_RATE_HZ, AudioChunk, Features, Score, StreamId, TaskScore, Transcript, Window

WINDOW_S = 1.0
STREAM = StreamId("call-shed", "p1", "patient")


class SlowRecognizer:
    """Stands in for Whisper: takes `delay_s` per window (the real model is tested elsewhere)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def transcribe_async(self, window: Window) -> Transcript:
        await asyncio.sleep(self.delay_s)
        return Transcript(window, "fine", (), "en", 0.0, self.delay_s * 1000)


class TinyExtractor:
    uses_vision = False

    def _features(self, transcript: Transcript, rows: int) -> Features:
        ids = np.array([101, 102], dtype=np.int64)
        return Features(transcript, ids, np.ones(2, np.int64), np.zeros(2, np.int64),
                        np.zeros((rows, 3), np.float32), np.zeros((max(rows, 1), 2), np.float32), 1.0, 0.0, 0.0)

    def extract(self, transcript: Transcript) -> Features:
        return self._features(transcript, 5)

    def empty(self, transcript: Transcript) -> Features:
        return self._features(transcript, 0)


class ConstantScorer:
    async def score(self, features: Features) -> tuple[TaskScore, ...]:
        return (TaskScore("sentiment", 0.5, None, None, None, -3.0, 3.0, "test", "1"),)


async def _media(seconds: int) -> AsyncIterator[AudioChunk]:
    block = int(WINDOW_S * SAMPLE_RATE_HZ)
    for i in range(seconds):
        yield AudioChunk(i * WINDOW_S, np.zeros(block, dtype=np.float32))
        await asyncio.sleep(0)  # media arrives much faster than the analyser can keep up


async def _run(shed_on_overload: bool) -> tuple[list[Score], int, int]:
    published: list[Score] = []

    async def sink(score: Score) -> None:
        published.append(score)

    pipeline = Pipeline(
        window_settings=WindowSettings(mode="fixed", length_s=WINDOW_S, hop_s=WINDOW_S),
        vad=None,  # fixed windows need no voice activity
        recognizer=SlowRecognizer(0.05),
        extractor=TinyExtractor(),
        scorer=ConstantScorer(),
        score_sinks=(sink,),
        queue_windows=2,
    )
    summary = await run_stream(STREAM, _media(12), pipeline, shed_on_overload=shed_on_overload)
    return published, summary.windows, summary.shed


def _stage_count(stage: str) -> float:
    value = metrics.REGISTRY.get_sample_value("affectstream_stage_latency_seconds_count", {"stage": stage})
    return value or 0.0


async def test_window_close_and_end_to_end_latencies_are_recorded_per_window() -> None:
    before = {stage: _stage_count(stage) for stage in ("window_close", "end_to_end")}
    published, windows, _ = await _run(shed_on_overload=False)
    # windows cut while media flows get a close latency; the flushed last one has no ingest moment left
    assert _stage_count("window_close") - before["window_close"] >= windows - 1
    assert _stage_count("end_to_end") - before["end_to_end"] == len(published) == windows


@pytest.mark.parametrize("shed_on_overload", [True, False])
async def test_every_window_is_published_once_and_sheds_only_when_live(shed_on_overload: bool) -> None:
    published, windows, shed = await _run(shed_on_overload)
    assert [s.window.seq for s in published] == list(range(windows))
    assert windows == 12
    shed_windows = [s for s in published if s.window.shed]
    assert len(shed_windows) == shed
    if shed_on_overload:
        assert shed > 0 and all(not s.tasks for s in shed_windows)
        assert all(s.tasks for s in published if not s.window.shed)
    else:
        assert shed == 0
    for score in published:  # shed or not, each is a valid affect.scores message
        messages.validate("scores", messages.score_message(score, replay=not shed_on_overload))
