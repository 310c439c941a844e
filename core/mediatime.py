"""Live media to pipeline units: decoded WebRTC frames -> `AudioChunk` (16 kHz mono float32) and sampled
`VideoFrame`s, in media time, merged into one time-ordered sequence.

Everything here is sans-IO: the async shell that reads aiortc tracks lives in `agent.sessions`.

- `AudioTimeline` places each decoded frame on the stream's sample timeline from its RTP timestamp, so a
  gap (lost packets, DTX) becomes silence and media time stays true.
- `AudioConverter` downmixes and resamples whatever aiortc delivers (Opus: s16 stereo 48 kHz; PCMU/PCMA:
  s16 mono 8 kHz) to float32 mono 16 kHz with PyAV's resampler.
- `FrameSampler` keeps at most `vision_fps` video frames per second of media time and holds a bounded number
  of them; when the consumer falls behind the newest frames win and each eviction is counted.
- `MediaMerger` releases audio and video in media-time order, so a frame reaches the windower before the
  audio that closes its window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

import av
import numpy as np

from core.types import SAMPLE_RATE_HZ, AudioChunk, VideoFrame

T = TypeVar("T")
MediaItem = AudioChunk | VideoFrame


class OverloadError(Exception):
    """The consumer fell further behind than the ingest buffer allows."""


@dataclass(frozen=True, slots=True)
class Placement:
    silence: int  # samples of silence to insert before the frame (input rate)
    skip: int  # samples at the start of the frame that overlap audio already placed


class AudioTimeline:
    """Sample timeline of one audio track at its input rate, driven by RTP timestamps."""

    def __init__(self, sample_rate_hz: int, *, tolerance_s: float = 0.002, max_gap_s: float = 10.0) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._tolerance = max(1, round(tolerance_s * sample_rate_hz))
        self._max_gap = round(max_gap_s * sample_rate_hz)
        self._next: int | None = None  # timestamp the next frame should carry
        self.gaps_filled = 0
        self.gap_samples = 0
        self.overlaps = 0
        self.discontinuities = 0

    def place(self, timestamp: int, n_samples: int) -> Placement:
        """Where a frame of `n_samples` stamped `timestamp` (input samples) goes."""
        if self._next is None:
            self._next = timestamp + n_samples
            return Placement(0, 0)
        offset = timestamp - self._next
        if offset > self._max_gap or -offset > self._max_gap:
            # a jump no loss explains (sender restarted its clock): continue the timeline as it was
            self.discontinuities += 1
            self._next = timestamp + n_samples
            return Placement(0, 0)
        if offset > self._tolerance:
            self.gaps_filled += 1
            self.gap_samples += offset
            self._next = timestamp + n_samples
            return Placement(offset, 0)
        if -offset > self._tolerance:
            self.overlaps += 1
            skip = min(n_samples, -offset)
            self._next += n_samples - skip
            return Placement(0, skip)
        self._next += n_samples
        return Placement(0, 0)


def _samples_at(frame: av.AudioFrame) -> int:
    """The frame's timestamp in samples at its own rate."""
    if frame.pts is None:
        raise ValueError("audio frame without a timestamp")
    time_base = frame.time_base or Fraction(1, frame.sample_rate)
    return round(frame.pts * time_base * frame.sample_rate)


def _silence_like(frame: av.AudioFrame, n_samples: int) -> av.AudioFrame:
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    shape = (channels, n_samples) if frame.format.is_planar else (1, n_samples * channels)
    return _frame_from(np.zeros(shape, dtype=array.dtype), frame)


def _skip_start(frame: av.AudioFrame, n_samples: int) -> av.AudioFrame:
    array = frame.to_ndarray()
    step = 1 if frame.format.is_planar else len(frame.layout.channels)
    return _frame_from(np.ascontiguousarray(array[:, n_samples * step :]), frame)


def _frame_from(array: np.ndarray, like: av.AudioFrame) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(array, format=like.format.name, layout=like.layout.name)
    frame.sample_rate = like.sample_rate
    return frame


class AudioConverter:
    """Decoded audio frames -> contiguous 16 kHz mono float32 chunks in media time."""

    def __init__(self, *, max_gap_s: float = 10.0) -> None:
        self._max_gap_s = max_gap_s
        self._timeline: AudioTimeline | None = None
        self._resampler: av.AudioResampler | None = None
        self._input_key: tuple[int, str, str] | None = None
        self._position = 0  # output samples emitted so far
        self._gaps_filled = 0
        self._gap_s = 0.0

    @property
    def gaps_filled(self) -> int:
        return self._gaps_filled + (self._timeline.gaps_filled if self._timeline else 0)

    @property
    def gap_s(self) -> float:
        timeline = self._timeline
        current = timeline.gap_samples / timeline.sample_rate_hz if timeline else 0.0
        return self._gap_s + current

    @property
    def duration_s(self) -> float:
        return self._position / SAMPLE_RATE_HZ

    @property
    def input_rate_hz(self) -> int | None:
        """Sample rate of the decoded audio last seen (48000 for Opus, 8000 for PCMU/PCMA)."""
        return self._input_key[0] if self._input_key else None

    def convert(self, frame: av.AudioFrame) -> list[AudioChunk]:
        key = (frame.sample_rate, frame.format.name, frame.layout.name)
        chunks: list[AudioChunk] = []
        if key != self._input_key:
            chunks += self._restart(frame.sample_rate)
            self._input_key = key
        assert self._timeline is not None
        placement = self._timeline.place(_samples_at(frame), frame.samples)
        if placement.silence:
            chunks += self._resample(_silence_like(frame, placement.silence))
        if placement.skip >= frame.samples:
            return chunks
        if placement.skip:
            frame = _skip_start(frame, placement.skip)
        return chunks + self._resample(frame)

    def flush(self) -> list[AudioChunk]:
        """Drain the resampler at the end of the stream."""
        return self._restart(None)

    def _restart(self, sample_rate_hz: int | None) -> list[AudioChunk]:
        chunks = self._emit(self._resampler.resample(None)) if self._resampler else []
        if self._timeline is not None:
            self._gaps_filled += self._timeline.gaps_filled
            self._gap_s += self._timeline.gap_samples / self._timeline.sample_rate_hz
        self._resampler = None
        self._timeline = None
        if sample_rate_hz is not None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
            self._timeline = AudioTimeline(sample_rate_hz, max_gap_s=self._max_gap_s)
        return chunks

    def _resample(self, frame: av.AudioFrame) -> list[AudioChunk]:
        frame.pts = None  # the timeline, not the resampler, keeps time
        assert self._resampler is not None
        return self._emit(self._resampler.resample(frame))

    def _emit(self, frames: list[av.AudioFrame]) -> list[AudioChunk]:
        chunks = []
        for out in frames:
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)  # float32 [n] 16 kHz
            if samples.size == 0:
                continue
            chunks.append(AudioChunk(start_s=self._position / SAMPLE_RATE_HZ, samples=samples))
            self._position += samples.size
        return chunks


class FrameSampler(Generic[T]):
    """Keeps at most `fps` frames per second of media time; holds at most `max_pending`, newest first."""

    def __init__(self, fps: float, max_pending: int) -> None:
        if fps <= 0 or max_pending < 1:
            raise ValueError("FrameSampler needs fps > 0 and max_pending >= 1")
        self.fps = fps
        self._pending: deque[tuple[float, T]] = deque()
        self._max_pending = max_pending
        self._last_slot: int | None = None
        self.kept = 0
        self.skipped = 0  # beyond vision_fps: expected, not a loss
        self.dropped = 0  # sampled but evicted because the consumer was behind

    def offer(self, time_s: float, frame: T) -> bool:
        """Keep the frame if it opens a new 1/fps slot; evict the oldest pending one if full."""
        slot = math.floor(time_s * self.fps + 1e-6)
        if self._last_slot is not None and slot <= self._last_slot:
            self.skipped += 1
            return False
        self._last_slot = slot
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append((time_s, frame))
        self.kept += 1
        return True

    def peek_time(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def pop(self) -> tuple[float, T]:
        return self._pending.popleft()

    def clear(self) -> None:
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)


class MediaMerger(Generic[T]):
    """Releases audio chunks and sampled video frames in media-time order.

    An audio chunk [start, end) is released once every frame before `end` has arrived; a frame at `t`
    once all audio up to `t` has. When one track stalls for more than `max_lag_s` of the other's media time,
    the other is released alone; a frame arriving after audio already passed its time is dropped as late
    (audio is never dropped: past `max_audio_s` of unconsumed audio, `push_audio` raises OverloadError).
    """

    def __init__(
        self, sampler: FrameSampler[T], *, has_video: bool, max_lag_s: float = 1.0, max_audio_s: float = 30.0
    ) -> None:
        self.sampler = sampler
        self._audio: deque[AudioChunk] = deque()
        self._audio_s = 0.0
        self._audio_mark = 0.0  # end of the last audio received
        self._video_mark = -math.inf  # time of the last frame received
        self._audio_ended = False
        self._video_ended = not has_video
        self._released_audio_s = 0.0  # end of the last audio released
        self._max_lag_s = max_lag_s
        self._max_audio_s = max_audio_s
        self.late_frames = 0

    def push_audio(self, chunk: AudioChunk) -> None:
        self._audio.append(chunk)
        self._audio_s += len(chunk.samples) / SAMPLE_RATE_HZ
        self._audio_mark = max(self._audio_mark, chunk.end_s)
        if self._audio_s > self._max_audio_s:
            raise OverloadError(f"{self._audio_s:.1f} s of audio not consumed (limit {self._max_audio_s} s)")

    def push_video(self, time_s: float, frame: T) -> None:
        self._video_mark = max(self._video_mark, time_s)
        if time_s < self._released_audio_s:
            self.late_frames += 1
            return
        self.sampler.offer(time_s, frame)

    def end_audio(self) -> None:
        self._audio_ended = True

    def end_video(self) -> None:
        self._video_ended = True

    @property
    def done(self) -> bool:
        return self._audio_ended and self._video_ended and not self._audio and not len(self.sampler)

    def pop(self) -> AudioChunk | tuple[float, T] | None:
        """The next item in media-time order, or None if it may still be preceded by one not yet arrived."""
        audio_end = self._audio[0].end_s if self._audio else None
        video_t = self.sampler.peek_time()
        if audio_end is not None and (video_t is None or audio_end <= video_t):
            if (
                self._video_ended
                or self._video_mark >= audio_end
                or self._stalled(self._audio_mark, audio_end)
            ):
                return self._pop_audio()
        elif video_t is not None:
            if self._audio_ended or self._audio_mark >= video_t or self._stalled(self._video_mark, video_t):
                return self.sampler.pop()
        return None

    def clear(self) -> None:
        self._audio.clear()
        self._audio_s = 0.0
        self.sampler.clear()

    def _stalled(self, own_mark: float, time_s: float) -> bool:
        return own_mark - time_s >= self._max_lag_s

    def _pop_audio(self) -> AudioChunk:
        chunk = self._audio.popleft()
        self._audio_s -= len(chunk.samples) / SAMPLE_RATE_HZ
        self._released_audio_s = max(self._released_audio_s, chunk.end_s)
        return chunk


def sample_frames(items: Iterable[MediaItem], fps: float) -> Iterator[MediaItem]:
    """Audio unchanged; video frames kept as live ingest keeps them (at most one per 1/fps slot)."""
    sampler: FrameSampler[VideoFrame] = FrameSampler(fps, max_pending=1)
    for item in items:
        if isinstance(item, AudioChunk):
            yield item
        elif sampler.offer(item.time_s, item):
            yield sampler.pop()[1]
