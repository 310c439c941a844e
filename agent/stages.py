"""What the pipeline needs of each stage: the seams of `agent.pipeline`, as Protocols.

The real stages satisfy them structurally (agent/speech.py `SpeechRecognizer`, core/features.py
`FeatureExtractor`, agent/scoring.py `Scorer`); a test passes a fake of its own just as well. A sink is any
async callable taking one item: a publisher, a JSON-lines writer, the server's score feed, a test's list.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeVar

from core.types import Features, Score, TaskScore, Transcript, Window

Item = TypeVar("Item", contravariant=True)


class SpeechStage(Protocol):
    """A window's speech as a transcript (word times in media time), off the event loop."""

    async def transcribe_async(self, window: Window) -> Transcript: ...


class FeatureStage(Protocol):
    """A transcript's window as model inputs; blocking (the pipeline calls it from a worker thread)."""

    @property
    def uses_vision(self) -> bool:
        """Whether video frames change the inputs (False: every window gets the "no face" row)."""
        ...

    def extract(self, transcript: Transcript) -> Features: ...

    def empty(self, transcript: Transcript) -> Features:
        """The inputs of a window that was not analysed (a shed window): no media, valid shapes."""
        ...


class ScoringStage(Protocol):
    """A window's scores by every model, one TaskScore per model task."""

    async def score(self, features: Features) -> tuple[TaskScore, ...]: ...


class Sink(Protocol[Item]):
    """Takes one item; the pipeline awaits it before the next sink and the next window."""

    def __call__(self, item: Item, /) -> Awaitable[None]: ...


ScoreSink = Sink[Score]
TranscriptSink = Sink[Transcript]
