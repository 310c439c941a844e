"""Decoded audio → `AudioChunk`s (16 kHz mono float32) on the stream's true media timeline, live and recorded.

- `AudioConverter` (live) places each frame on the track's sample timeline from its RTP timestamp
  (`AudioTimeline`), so a gap (lost packets, DTX) becomes silence and media time stays true; media time starts
  at 0 with the first frame.
- `AudioClock` (recorded) stamps audio from the container's PTS: the first frame's, then by sample count; a
  gap is left in media time for the windower to fill with silence.
Both resample with `core.resample.Resampler16k` and judge jumps with `core.gaps.GapPolicy` (`LIVE_GAPS`,
`RECORDED_GAPS`: the thresholds, and why they differ, are there).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from core.gaps import LIVE_GAPS, RECORDED_GAPS, GapPolicy, Jump
from core.resample import Resampler16k, audio_format
from core.types import SAMPLE_RATE_HZ, AudioChunk


@dataclass(frozen=True, slots=True)
class Placement:
    silence: int  # samples of silence to insert before the frame (input rate)
    skip: int  # samples at the start of the frame that overlap audio already placed


class AudioTimeline:
    """Sample timeline of one audio track at its input rate, driven by RTP timestamps."""

    def __init__(self, sample_rate_hz: int, gaps: GapPolicy = LIVE_GAPS) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._gaps = gaps
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
        jump = self._gaps.judge(offset, self.sample_rate_hz)
        if jump is Jump.CLOCK_JUMP:  # continue the timeline as it was
            self.discontinuities += 1
            self._next = timestamp + n_samples
            return Placement(0, 0)
        if jump is Jump.GAP:
            self.gaps_filled += 1
            self.gap_samples += offset
            self._next = timestamp + n_samples
            return Placement(offset, 0)
        if jump is Jump.OVERLAP:
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
    """Live decoded audio frames -> contiguous 16 kHz mono float32 chunks in media time, gaps filled."""

    def __init__(self, gaps: GapPolicy = LIVE_GAPS) -> None:
        self._gaps = gaps
        self._timeline: AudioTimeline | None = None
        self._resampler = Resampler16k()
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
        return self._resampler.input[0] if self._resampler.input else None

    def convert(self, frame: av.AudioFrame) -> list[AudioChunk]:
        chunks: list[AudioChunk] = []
        if audio_format(frame) != self._resampler.input:  # a new codec: its timestamps count at its own rate
            chunks += self._restart(frame.sample_rate)
        assert self._timeline is not None
        placement = self._timeline.place(_samples_at(frame), frame.samples)
        if placement.silence:
            chunks += self._emit(self._resampler.push(_silence_like(frame, placement.silence)))
        if placement.skip >= frame.samples:
            return chunks
        if placement.skip:
            frame = _skip_start(frame, placement.skip)
        return chunks + self._emit(self._resampler.push(frame))

    def flush(self) -> list[AudioChunk]:
        """Drain the resampler at the end of the stream."""
        return self._restart(None)

    def _restart(self, sample_rate_hz: int | None) -> list[AudioChunk]:
        chunks = self._emit(self._resampler.flush())
        if self._timeline is not None:
            self._gaps_filled += self._timeline.gaps_filled
            self._gap_s += self._timeline.gap_samples / self._timeline.sample_rate_hz
        self._timeline = AudioTimeline(sample_rate_hz, self._gaps) if sample_rate_hz is not None else None
        return chunks

    def _emit(self, pieces: list[np.ndarray]) -> list[AudioChunk]:
        chunks = []
        for samples in pieces:  # float32 [n] 16 kHz
            chunks.append(AudioChunk(start_s=self._position / SAMPLE_RATE_HZ, samples=samples))
            self._position += samples.size
        return chunks


class AudioClock:
    """Recorded decoded audio -> 16 kHz mono float32 chunks stamped from the first frame's PTS by count.

    A gap in the PTS (`RECORDED_GAPS`) drains the resampler and restarts the count at the new PTS, leaving the
    gap in media time; a PTS that steps back is taken as rounding (the count goes on: media time never moves
    back). A change of rate or layout (concatenated recordings) drains the resampler and the count goes on.
    """

    def __init__(self, gaps: GapPolicy = RECORDED_GAPS) -> None:
        self._gaps = gaps
        self._resampler = Resampler16k()
        self._base_s: float | None = None  # media time of sample 0 since the last (re)start
        self._count = 0  # samples emitted since the last (re)start
        self._in_next_s: float | None = None  # expected PTS of the next input frame
        self.samples_out = 0
        self.end_s: float | None = None

    def push(self, frame: av.AudioFrame) -> list[AudioChunk]:
        chunks: list[AudioChunk] = []
        time_s = frame.time
        if time_s is not None and self._in_next_s is not None:
            offset = (time_s - self._in_next_s) * frame.sample_rate
            if self._gaps.judge(offset, frame.sample_rate) is Jump.GAP:
                chunks.extend(self.flush())
                self._base_s = None
        if self._base_s is None:
            self._base_s = float(time_s) if time_s is not None else (self.end_s or 0.0)
            self._count = 0
        start_in_s = time_s if time_s is not None else (self._in_next_s or 0.0)
        self._in_next_s = start_in_s + frame.samples / frame.sample_rate
        chunks.extend(self._stamp(self._resampler.push(frame)))
        return chunks

    def flush(self) -> list[AudioChunk]:
        return self._stamp(self._resampler.flush())

    def _stamp(self, pieces: list[np.ndarray]) -> list[AudioChunk]:
        chunks = []
        for samples in pieces:  # float32 [n] 16 kHz
            assert self._base_s is not None
            chunk = AudioChunk(start_s=self._base_s + self._count / SAMPLE_RATE_HZ, samples=samples)
            self._count += samples.size
            self.samples_out += samples.size
            self.end_s = chunk.end_s
            chunks.append(chunk)
        return chunks
