"""Builders of real agent values for the Kafka tests (no model needed: scores are given)."""

from __future__ import annotations

import numpy as np

from core.types import Features, Score, StreamId, TaskScore, Transcript, Window, Word

SECRET_TEXT = "my private symptom words zebra-quartz"  # must never appear in logs or score messages


def make_score(
    stream: StreamId,
    seq: int,
    *,
    sentiment: float = 0.5,
    depression: float | None = None,
    window_s: float = 2.0,
    text: str = SECRET_TEXT,
) -> Score:
    window = Window(
        stream=stream,
        seq=seq,
        start_s=seq * window_s,
        end_s=(seq + 1) * window_s,
        audio=np.zeros(16, dtype=np.float32),
        frames=(),
        closed_by="utterance",
    )
    transcript = Transcript(
        window=window,
        text=text,
        words=tuple(Word(w, seq * window_s, seq * window_s + 0.1, 0.9) for w in text.split()),
        language="en",
        no_speech_prob=0.01,
        latency_ms=12.5,
    )
    features = Features(
        transcript=transcript,
        input_ids=np.zeros(4, dtype=np.int64),
        attention_mask=np.ones(4, dtype=np.int64),
        token_type_ids=np.zeros(4, dtype=np.int64),
        audio=np.zeros((2, 25), dtype=np.float32),
        vision=np.zeros((1, 4), dtype=np.float32),
        speech_ratio=0.8,
        face_visible_ratio=1.0,
        latency_ms=3.0,
    )
    tasks = [TaskScore("sentiment", sentiment, sentiment, 0.1, None, -3.0, 3.0, "selfmm-mosi", "1.0.0")]
    if depression is not None:
        tasks.append(TaskScore("depression", depression, None, None, None, 0.0, 27.0, "selfmm-phq", "0.1.0"))
    return Score(features=features, tasks=tuple(tasks), latencies_ms={"scoring": 4.0})
