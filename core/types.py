"""Units of data that flow between the pipeline's stages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SAMPLE_RATE_HZ = 16_000
ClosedBy = Literal["utterance", "max_length", "hop", "stream_end"]
# Matched whole (`fullmatch`): with `match`, `$` would also accept a trailing newline, which then reaches Kafka
# keys, headers and log lines.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True, slots=True)
class StreamId:
    """One participant of one call in one ingest session. `key` (call/participant) orders it in Kafka;
    `session_id` tells a reconnect's windows (whose seq restarts at 0) from the earlier session's."""

    call_id: str
    participant_id: str
    role: str = "participant"
    session_id: str = field(default="0", kw_only=True)

    def __post_init__(self) -> None:
        for name in ("call_id", "participant_id", "role", "session_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                raise ValueError(
                    f"{name} must be 1-128 characters of letters, digits, '.', '_', ':' or '-' "
                    f"starting with a letter or digit; got {shown}"
                )

    @property
    def key(self) -> str:
        return f"{self.call_id}/{self.participant_id}"

    @property
    def session_key(self) -> tuple[str, str]:
        """(key, session_id): a window is identified by this and its seq (deduplication)."""
        return (self.key, self.session_id)


def recording_session_id(start_s: float | None = None, end_s: float | None = None) -> str:
    """The session id of a replayed or transcribed recording: the same on every run of the same file and
    range, so a rerun's windows are recognised as the same windows; never a live WHIP session's (hex)."""
    if start_s is None and end_s is None:
        return "recording"

    def shown(seconds: float | None, default: str) -> str:
        return default if seconds is None else f"{seconds:.3f}".rstrip("0").rstrip(".")

    return f"recording-{shown(start_s, '0')}-{shown(end_s, 'end')}"


@dataclass(frozen=True, slots=True)
class AudioChunk:
    start_s: float  # media time of the first sample
    samples: np.ndarray  # float32 [n] 16 kHz mono

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / SAMPLE_RATE_HZ


@dataclass(frozen=True, slots=True)
class VideoFrame:
    time_s: float  # media time
    rgb: np.ndarray  # uint8 [h, w, 3]


@dataclass(frozen=True, slots=True)
class Window:
    stream: StreamId
    seq: int
    start_s: float  # media time, not wall clock: replay reproduces live windows exactly
    end_s: float
    audio: np.ndarray  # float32 [n] 16 kHz mono
    frames: tuple[VideoFrame, ...]
    closed_by: ClosedBy
    shed: bool = False  # True when overload forced the pipeline to skip scoring this window

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_s: float  # media time
    end_s: float
    probability: float


@dataclass(frozen=True, slots=True)
class Transcript:
    window: Window
    text: str
    words: tuple[Word, ...]
    language: str
    no_speech_prob: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Features:
    transcript: Transcript
    input_ids: np.ndarray  # int64 [L]
    attention_mask: np.ndarray  # int64 [L]
    token_type_ids: np.ndarray  # int64 [L]
    audio: np.ndarray  # float32 [La, Da]
    vision: np.ndarray  # float32 [Lv, Dv]
    speech_ratio: float
    face_visible_ratio: float
    latency_ms: float
    # float32 [Da]: the speaker's running reference for this window (core/speaker_reference.py), set by the
    # pipeline per participant stream; None: not known (the bundle then takes the window's own frames)
    audio_reference: np.ndarray | None = None

    @property
    def window(self) -> Window:
        return self.transcript.window


@dataclass(frozen=True, slots=True)
class TaskScore:
    task: str  # e.g. "sentiment", "depression"
    m: float  # multimodal output: the score
    t: float | None  # unimodal outputs when the graph exposes them
    a: float | None
    v: float | None
    label_min: float
    label_max: float
    model_id: str
    model_version: str


@dataclass(frozen=True, slots=True)
class Score:
    features: Features
    tasks: tuple[TaskScore, ...]
    latencies_ms: dict[str, float] = field(default_factory=dict)

    @property
    def window(self) -> Window:
        return self.features.transcript.window
