"""The one place that knows the stage order: media → windows → speech → features → scoring → publish.

Each stream runs two tasks joined by a bounded queue: the windower (cheap, keeps up with media time) and the
analyser (Whisper, features, the shared micro-batched scorer, publishing). Live streams shed windows when the
analyser falls behind — a shed window is still published, marked as shed — while replay applies backpressure
instead so that it stays deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from agent import metrics
from agent.settings import WindowSettings
from agent.stages import FeatureStage, ScoreSink, ScoringStage, Sink, SpeechStage, TranscriptSink
from agent.vad import VoiceActivityDetector
from agent.windows import Windower
from core.speaker_reference import SpeakerReferences
from core.types import AudioChunk, Score, StreamId, Transcript, VideoFrame, Window

log = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What every stream runs through: how windows are cut, the stages the process shares (one model of
    each kind) and the sinks, in the order they get each result.

    Built once with its sinks (agent/runtime.py `open_runtime`); whoever wants more sinks or other window
    settings runs a pipeline of its own, derived with `with_sinks` or `dataclasses.replace`.
    """

    window_settings: WindowSettings
    vad: VoiceActivityDetector | None  # shared; each stream's windower works on its own vad.new_stream()
    recognizer: SpeechStage
    extractor: FeatureStage
    scorer: ScoringStage
    score_sinks: tuple[ScoreSink, ...] = ()
    transcript_sinks: tuple[TranscriptSink, ...] = ()
    queue_windows: int = 8
    # each participant's running voice reference (core/speaker_reference.py), shared by every derived pipeline
    speaker_references: SpeakerReferences = field(default_factory=SpeakerReferences)

    def with_sinks(
        self, scores: Sequence[ScoreSink] = (), transcripts: Sequence[TranscriptSink] = ()
    ) -> Pipeline:
        """This pipeline with more sinks after its own: they get a result once the earlier sinks are done
        with it (the publisher's sink only hands it over: analysis never waits on Kafka)."""
        return replace(
            self,
            score_sinks=(*self.score_sinks, *scores),
            transcript_sinks=(*self.transcript_sinks, *transcripts),
        )


@dataclass
class StreamSummary:
    stream: StreamId
    windows: int = 0
    scored: int = 0
    shed: int = 0
    failed: int = 0
    media_end_s: float = 0.0


class _ArrivalClock:
    """When the audio up to a media time arrived (wall clock), for the ingest → window close latency."""

    def __init__(self) -> None:
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=4096)  # (chunk end_s, monotonic)

    def note(self, chunk: AudioChunk) -> None:
        self._arrivals.append((chunk.end_s, time.monotonic()))

    def arrival_of(self, media_s: float) -> float:
        while len(self._arrivals) > 1 and self._arrivals[0][0] < media_s - 1e-6:
            self._arrivals.popleft()
        return self._arrivals[0][1] if self._arrivals else time.monotonic()


class _WindowQueue:
    """Windows waiting for analysis: at most `capacity` full windows; shed markers (no media) always fit."""

    def __init__(self, capacity: int) -> None:
        self._items: asyncio.Queue[tuple[Window, float] | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(capacity)

    @property
    def full(self) -> bool:
        return self._slots.locked()

    async def put(self, window: Window) -> None:
        closed_at = time.monotonic()
        if not window.shed:
            await self._slots.acquire()  # backpressure when nobody sheds
        self._items.put_nowait((window, closed_at))
        metrics.set_queue_depth("windows", self._items.qsize())

    def close(self) -> None:
        self._items.put_nowait(None)

    async def get(self) -> tuple[Window, float] | None:
        return await self._items.get()

    def done(self, window: Window) -> None:
        if not window.shed:
            self._slots.release()


async def run_stream(
    stream: StreamId,
    media: AsyncIterator[AudioChunk | VideoFrame],
    pipeline: Pipeline,
    *,
    shed_on_overload: bool = True,
) -> StreamSummary:
    """Analyse one stream to its end; returns what happened to its windows.

    `media` yields audio chunks and video frames in media-time order, frames already sampled to vision_fps
    (live ingest and replay both use `core.mediatime.FrameSampler` for that).
    """
    summary = StreamSummary(stream)
    queue = _WindowQueue(pipeline.queue_windows)
    analyser = asyncio.create_task(_analyse(queue, pipeline, summary), name=f"analyse:{stream.key}")
    try:
        await _cut_windows(stream, media, pipeline, queue, summary, shed_on_overload)
    finally:
        queue.close()
        await analyser
    log.info(
        "stream ended",
        extra={"stream": stream.key, "windows": summary.windows, "scored": summary.scored,
               "shed": summary.shed, "failed": summary.failed},
    )
    return summary


async def _cut_windows(
    stream: StreamId,
    media: AsyncIterator[AudioChunk | VideoFrame],
    pipeline: Pipeline,
    queue: _WindowQueue,
    summary: StreamSummary,
    shed_on_overload: bool,
) -> None:
    windower = Windower(stream, pipeline.window_settings, pipeline.vad)
    clock = _ArrivalClock()
    try:
        async for item in media:
            if isinstance(item, AudioChunk):
                summary.media_end_s = max(summary.media_end_s, item.end_s)
                clock.note(item)
            for window in windower.push(item):
                metrics.observe_stage("window_close", time.monotonic() - clock.arrival_of(window.end_s))
                await _enqueue(window, queue, summary, shed_on_overload)
    finally:
        for window in windower.flush():
            await _enqueue(window, queue, summary, shed_on_overload)


async def _enqueue(
    window: Window, queue: _WindowQueue, summary: StreamSummary, shed_on_overload: bool
) -> None:
    summary.windows += 1
    metrics.WINDOW_CLOSED.labels(closed_by=window.closed_by).inc()
    if shed_on_overload and queue.full:
        # The analyser is behind: skip this window's analysis but still publish that it existed.
        window = replace(window, shed=True, audio=window.audio[:0], frames=())
    await queue.put(window)


async def _analyse(queue: _WindowQueue, pipeline: Pipeline, summary: StreamSummary) -> None:
    while (item := await queue.get()) is not None:
        window, closed_at = item
        try:
            score = await _analyse_window(window, pipeline)
        except Exception:
            summary.failed += 1
            metrics.WINDOWS_FAILED.inc()
            log.exception("window analysis failed", extra={"stream": window.stream.key, "seq": window.seq})
            continue
        finally:
            queue.done(window)
        if window.shed:
            summary.shed += 1
        else:
            summary.scored += 1
        await _deliver(pipeline.score_sinks, score, window)
        metrics.observe_stage("end_to_end", time.monotonic() - closed_at)  # window close → sinks done


async def _analyse_window(window: Window, pipeline: Pipeline) -> Score:
    latencies_ms: dict[str, float] = {}
    if window.shed:
        metrics.WINDOWS_SHED.inc()
        return Score(pipeline.extractor.empty(Transcript(window, "", (), "", 1.0, 0.0)), (), latencies_ms)
    with metrics.time_stage("speech", latencies_ms):
        transcript = await pipeline.recognizer.transcribe_async(window)
    await _deliver(pipeline.transcript_sinks, transcript, window)
    with metrics.time_stage("features", latencies_ms):
        features = await asyncio.to_thread(pipeline.extractor.extract, transcript)
        features = pipeline.speaker_references.attach(window.stream.key, features)
    with metrics.time_stage("scoring", latencies_ms):
        tasks = await pipeline.scorer.score(features)
    metrics.WINDOWS_SCORED.inc()
    return Score(features, tasks, latencies_ms)


async def _deliver(sinks: Sequence[Sink[Item]], item: Item, window: Window) -> None:
    """Hand `item` to every sink; one failing sink (a full spool, a closed feed) stops neither the others
    nor the stream: its error is logged and the next window goes on."""
    for sink in sinks:
        try:
            await sink(item)
        except Exception:
            log.exception("a sink refused window %d of %s", window.seq, window.stream.key)
