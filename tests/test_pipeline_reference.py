"""The pipeline keeps one voice reference per participant stream (core/speaker_reference.py) and hands it to the
scorer with every window's features; a participant who reconnects keeps theirs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.pipeline import Pipeline, run_stream
from agent.settings import WindowSettings
from core.audio_columns import AUDIO_DIM, LEVEL_COLUMN, VOICED_COLUMN
from core.types import SAMPLE_RATE_HZ, AudioChunk, Features, StreamId, TaskScore, Transcript, Window

COLUMN = 20  # an mfcc column: its value tells the windows apart


class InstantRecognizer:
    async def transcribe_async(self, window: Window) -> Transcript:
        return Transcript(window, "fine", (), "en", 0.0, 0.0)


class LoudnessExtractor:
    """Each window's descriptors: loud voiced frames whose COLUMN holds the window's first sample."""

    uses_vision = False

    def extract(self, transcript: Transcript) -> Features:
        audio = np.zeros((10, AUDIO_DIM), np.float32)
        audio[:, LEVEL_COLUMN], audio[:, VOICED_COLUMN] = -2.0, 1.0
        audio[:, COLUMN] = transcript.window.audio[0]
        ids = np.array([101, 102], np.int64)
        return Features(transcript, ids, np.ones(2, np.int64), np.zeros(2, np.int64), audio,
                        np.zeros((1, 2), np.float32), 1.0, 0.0, 0.0)

    def empty(self, transcript: Transcript) -> Features:
        return self.extract(transcript)


class RecordingScorer:
    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}

    async def score(self, features: Features) -> tuple[TaskScore, ...]:
        assert features.audio_reference is not None
        self.seen.setdefault(features.window.stream.participant_id, []).append(float(features.audio_reference[COLUMN]))
        return (TaskScore("sentiment", 0.0, None, None, None, -3.0, 3.0, "test", "1"),)


async def _media(values: list[float]) -> AsyncIterator[AudioChunk]:
    for i, value in enumerate(values):
        yield AudioChunk(float(i), np.full(SAMPLE_RATE_HZ, value, np.float32))
        await asyncio.sleep(0)


@pytest.fixture()
def pipeline_and_scorer() -> tuple[Pipeline, RecordingScorer]:
    scorer = RecordingScorer()
    pipeline = Pipeline(WindowSettings(mode="fixed", length_s=1.0, hop_s=1.0), None, InstantRecognizer(),
                        LoudnessExtractor(), scorer)
    return pipeline, scorer


async def test_each_participant_has_a_running_reference_of_their_own(
    pipeline_and_scorer: tuple[Pipeline, RecordingScorer],
) -> None:
    pipeline, scorer = pipeline_and_scorer
    await asyncio.gather(
        run_stream(StreamId("call", "doctor"), _media([1.0, 3.0, 5.0]), pipeline, shed_on_overload=False),
        run_stream(StreamId("call", "patient"), _media([10.0, 10.0]), pipeline, shed_on_overload=False),
    )
    assert scorer.seen["doctor"] == pytest.approx([1.0, 2.0, 3.0])  # the speech so far, this window included
    assert scorer.seen["patient"] == pytest.approx([10.0, 10.0])


async def test_a_participant_who_reconnects_keeps_their_reference(
    pipeline_and_scorer: tuple[Pipeline, RecordingScorer],
) -> None:
    pipeline, scorer = pipeline_and_scorer
    await run_stream(StreamId("call", "patient", session_id="first"), _media([2.0]), pipeline, shed_on_overload=False)
    derived = pipeline.with_sinks()  # e.g. a replay's pipeline with its own sinks shares the references
    await run_stream(StreamId("call", "patient", session_id="second"), _media([4.0]), derived, shed_on_overload=False)
    assert scorer.seen["patient"] == pytest.approx([2.0, 3.0])
