"""Cuts one stream's audio chunks and video frames into windows: a pure state machine, no I/O.

Media time is counted in samples from the stream's first audio chunk, so it never drifts; a chunk that starts
after the previous one ended is preceded by silence for the gap, one that overlaps is trimmed.

`utterance` mode (voice activity from `vad`, with hysteresis: a frame opens speech at `vad_threshold` and
keeps it down to `vad_threshold - 0.15`):
- a window opens `speech_pad_s` before the first voiced frame (never before the previous window's end);
- a pause of at least `min_silence_s` closes it `speech_pad_s` after the last voiced frame
  (closed_by="utterance");
- a window shorter than `min_length_s` is not closed at a pause: it stays open, so a short voiced bit merges
  with speech that follows within `min_length_s` of its start, or else is closed with trailing silence up to
  `min_length_s`. Nothing voiced is ever dropped;
- a window reaching `max_length_s` is cut at its least voiced frame in its second half
  (closed_by="max_length") and the rest continues in the next window;
- silence alone makes no window.
`fixed` mode: windows of `length_s` every `hop_s` (closed_by="hop"), tiling media time when hop == length.
`flush()` closes the last, partial window (closed_by="stream_end").

A closed window is held until the audio is `_FRAME_HOLD_S` past its end, so video frames that arrive a little
after the audio still join it; a frame older than the last emitted window's end is dropped and counted.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agent.settings import WindowSettings
from agent.vad import VoiceActivityDetector
from core.call_codec import CALL_PACKET_S
from core.gaps import GapPolicy, Jump
from core.types import SAMPLE_RATE_HZ, AudioChunk, ClosedBy, StreamId, VideoFrame, Window

log = logging.getLogger(__name__)

_FRAME_HOLD_S = 0.25
# chunks from one converter are sample-exact: 1 ms (16 samples) is timestamp rounding, not a gap
_CHUNK_GAPS = GapPolicy(tolerance_s=0.001)
_MAX_GAP_PIECE_SAMPLES = SAMPLE_RATE_HZ  # gaps are filled a second at a time so buffers stay bounded
_HYSTERESIS = 0.15


@dataclass(frozen=True, slots=True)
class _Span:
    start: int  # sample index from the stream origin
    end: int
    closed_by: ClosedBy


class _SampleBuffer:
    """Samples [start, end) of the stream in one growable array (amortised appends, cheap front drops)."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)  # float32 16 kHz
        self._offset = 0  # index in _data of sample `start`
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        used = self.end - self.start
        needed = used + len(samples)
        if self._offset + needed > len(self._data):
            capacity = max(len(self._data), 2 * needed)
            data = np.zeros(capacity, dtype=np.float32)
            data[:used] = self._data[self._offset : self._offset + used]
            self._data, self._offset = data, 0
        self._data[self._offset + used : self._offset + needed] = samples
        self.end += len(samples)

    def slice(self, start: int, end: int) -> np.ndarray:
        if start < self.start or end > self.end:
            raise IndexError(f"samples [{start}, {end}) outside buffer [{self.start}, {self.end})")
        return self._data[self._offset + start - self.start : self._offset + end - self.start].copy()

    def drop_before(self, index: int) -> None:
        index = min(max(index, self.start), self.end)
        self._offset += index - self.start
        self.start = index


class Windower:
    """Windows of one session of one stream; `push` items in media-time order, then `flush` once at the end.

    seq counts from 0 in every windower: a participant who reconnects gets a new ingest session, whose
    `StreamId.session_id` is what tells its windows from the earlier session's (same key, same seqs)."""

    def __init__(self, stream: StreamId, settings: WindowSettings, vad: VoiceActivityDetector | None = None) -> None:
        """`vad` may be shared by many streams: the windower works on its own `vad.new_stream()`."""
        if settings.mode == "utterance" and vad is None:
            raise ValueError("utterance mode needs a voice activity detector")
        self.stream = stream
        self.settings = settings
        vad = vad.new_stream() if vad is not None else None
        self._origin_s: float | None = None
        self._audio = _SampleBuffer()
        self._frames: deque[VideoFrame] = deque()
        self._pending: deque[_Span] = deque()
        self._seq = 0
        self._emitted_end = 0  # sample index where the last closed window ends; windows never overlap
        self._released_end_s = float("-inf")  # end of the last window handed out
        self._finished = False
        self.late_frames = 0
        self.dropped_frames = 0
        self.gap_samples = 0
        self._hold = round(_FRAME_HOLD_S * SAMPLE_RATE_HZ)
        self._max_frames = max(256, int((settings.max_length_s + settings.length_s + 2) * 60))
        self._state = _UtteranceState(settings, vad) if settings.mode == "utterance" and vad else _FixedState(settings)

    @property
    def buffered_s(self) -> float:
        """Audio held for windows not yet emitted (bounded by max_length_s / length_s plus a little)."""
        return (self._audio.end - self._audio.start) / SAMPLE_RATE_HZ

    @property
    def buffered_frames(self) -> int:
        return len(self._frames)

    # -- input -------------------------------------------------------------------------------------------
    def push(self, item: AudioChunk | VideoFrame) -> list[Window]:
        if self._finished:
            raise RuntimeError("push() after flush()")
        if isinstance(item, VideoFrame):
            self._add_frame(item)
            return []
        for samples in self._align(item):
            self._audio.append(samples)
            for span in self._state.advance(samples, self._audio.end, self._emitted_end):
                self._close(span)
        out = self._emit(final=False)
        self._trim()
        return out

    def flush(self) -> list[Window]:
        """Close the open window at the end of the audio and emit everything still held."""
        if self._finished:
            return []
        self._finished = True
        span = self._state.finish(self._audio.end, self._emitted_end)
        if span is not None:
            self._close(span)
        return self._emit(final=True)

    # -- media time ----------------------------------------------------------------------------------------
    def _align(self, chunk: AudioChunk) -> list[np.ndarray]:
        samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)  # float32 [n] 16 kHz
        if self._origin_s is None:
            self._origin_s = chunk.start_s
            return [samples] if len(samples) else []
        offset = round((chunk.start_s - self._origin_s) * SAMPLE_RATE_HZ) - self._audio.end
        jump = _CHUNK_GAPS.judge(offset, SAMPLE_RATE_HZ)
        if jump is Jump.GAP:
            self.gap_samples += offset
            pieces = [
                np.zeros(min(_MAX_GAP_PIECE_SAMPLES, offset - done), dtype=np.float32)
                for done in range(0, offset, _MAX_GAP_PIECE_SAMPLES)
            ]
            return [*pieces, samples]
        if jump is Jump.OVERLAP:
            samples = samples[-offset:]  # overlaps audio we already have
        return [samples] if len(samples) else []

    def _time_s(self, index: int) -> float:
        assert self._origin_s is not None
        return self._origin_s + index / SAMPLE_RATE_HZ

    # -- frames --------------------------------------------------------------------------------------------
    def _add_frame(self, frame: VideoFrame) -> None:
        if frame.time_s < self._released_end_s:
            self.late_frames += 1
            return
        times = [f.time_s for f in self._frames]
        self._frames.insert(bisect.bisect_right(times, frame.time_s), frame)
        while len(self._frames) > self._max_frames:
            self._frames.popleft()
            self.dropped_frames += 1

    def _take_frames(self, start_s: float, end_s: float) -> tuple[VideoFrame, ...]:
        taken = []
        while self._frames and self._frames[0].time_s < end_s:
            frame = self._frames.popleft()
            if frame.time_s >= start_s:
                taken.append(frame)
        return tuple(taken)

    # -- windows -------------------------------------------------------------------------------------------
    def _close(self, span: _Span) -> None:
        if span.end > span.start:
            self._pending.append(span)
            self._emitted_end = span.end

    def _emit(self, *, final: bool) -> list[Window]:
        windows = []
        while self._pending and (final or self._pending[0].end + self._hold <= self._audio.end):
            span = self._pending.popleft()
            start_s, end_s = self._time_s(span.start), self._time_s(span.end)
            windows.append(
                Window(
                    stream=self.stream,
                    seq=self._seq,
                    start_s=start_s,
                    end_s=end_s,
                    audio=self._audio.slice(span.start, span.end),
                    frames=self._take_frames(start_s, end_s),
                    closed_by=span.closed_by,
                )
            )
            self._seq += 1
            self._released_end_s = end_s
        return windows

    def _trim(self) -> None:
        keep = self._state.keep_from(self._audio.end)
        if self._pending:
            keep = min(keep, self._pending[0].start)
        self._audio.drop_before(keep)
        if self._origin_s is not None:
            keep_s = self._time_s(keep)
            while self._frames and self._frames[0].time_s < keep_s:
                self._frames.popleft()


class _FixedState:
    """Windows of length_s every hop_s from the stream origin."""

    def __init__(self, settings: WindowSettings) -> None:
        self._length = round(settings.length_s * SAMPLE_RATE_HZ)
        self._hop = round(settings.hop_s * SAMPLE_RATE_HZ)
        self._next_start = 0

    def advance(self, samples: np.ndarray, end: int, emitted_end: int) -> list[_Span]:
        # Windows may overlap here when hop_s < length_s: that is what a sliding window asks for.
        spans = []
        while self._next_start + self._length <= end:
            spans.append(_Span(self._next_start, self._next_start + self._length, "hop"))
            self._next_start += self._hop
        return spans

    def finish(self, end: int, emitted_end: int) -> _Span | None:
        start = self._next_start
        return _Span(start, end, "stream_end") if end > start else None

    def keep_from(self, end: int) -> int:
        return self._next_start


class _UtteranceState:
    """Voice-activity bookkeeping for utterance mode (see the module docstring for the rules)."""

    def __init__(self, settings: WindowSettings, vad: VoiceActivityDetector) -> None:
        rate = SAMPLE_RATE_HZ
        self._vad = vad
        self._frame = vad.frame_samples
        self._on = settings.vad_threshold
        self._off = max(settings.vad_threshold - _HYSTERESIS, 0.01)
        self._pad = round(settings.speech_pad_s * rate)
        self._min_silence = round(settings.min_silence_s * rate)
        self._min_length = round(settings.min_length_s * rate)
        self._max_length = round(settings.max_length_s * rate)
        self._frames_done = 0
        self._start: int | None = None  # open window's first sample
        self._probs: list[float] = []  # per frame since the open window's first whole frame
        self._voiced: list[bool] = []
        self._first_frame = 0  # frame index of _probs[0]
        self._voice_end = 0  # end of the last voiced frame
        self._speaking = False

    def advance(self, samples: np.ndarray, end: int, emitted_end: int) -> list[_Span]:
        spans = []
        for prob in self._vad.speech_probabilities(samples):
            frame = self._frames_done
            self._frames_done += 1
            span = self._step(frame, float(prob), emitted_end)
            if span is not None:
                spans.append(span)
                emitted_end = span.end
        return spans

    def _step(self, frame: int, prob: float, emitted_end: int) -> _Span | None:
        frame_start, frame_end = frame * self._frame, (frame + 1) * self._frame
        voiced = prob >= (self._off if self._speaking else self._on)
        self._speaking = voiced
        if self._start is None:
            if not voiced:
                return None
            self._start = max(frame_start - self._pad, emitted_end, 0)
            self._probs, self._voiced, self._first_frame = [], [], frame
        self._probs.append(prob)
        self._voiced.append(voiced)
        if voiced:
            self._voice_end = frame_end
        length = frame_end - self._start
        silence = frame_end - self._voice_end
        if silence >= self._min_silence and length >= self._min_length:
            end = min(frame_end, max(self._voice_end + self._pad, self._start + self._min_length))
            return self._close_at(end, "utterance")
        if length >= self._max_length:
            return self._close_at(self._cut_point(frame_end), "max_length")
        return None

    def _cut_point(self, frame_end: int) -> int:
        """End of the least voiced frame in the open window's second half (the latest, on ties)."""
        assert self._start is not None
        half = (self._start + frame_end) // 2
        first = max(0, -(-(half - self._first_frame * self._frame) // self._frame))
        tail = self._probs[first:]
        if not tail:
            return frame_end
        best = min(range(len(tail)), key=lambda i: (tail[i], -i))
        return (self._first_frame + first + best + 1) * self._frame

    def _close_at(self, end: int, closed_by: ClosedBy) -> _Span:
        assert self._start is not None
        span = _Span(self._start, end, closed_by)
        # Frames after the cut (max_length) belong to the next window if any of them is voiced.
        first_rest = end // self._frame - self._first_frame
        rest_voiced = self._voiced[first_rest:]
        self._start = None
        if any(rest_voiced):
            self._start = end
            self._probs, self._voiced = self._probs[first_rest:], rest_voiced
            self._first_frame += first_rest
            last = max(i for i, voiced in enumerate(rest_voiced) if voiced)
            self._voice_end = (self._first_frame + last + 1) * self._frame
        return span

    def finish(self, end: int, emitted_end: int) -> _Span | None:
        if self._start is None or end <= self._start:
            return None
        return _Span(max(self._start, emitted_end), end, "stream_end")

    def keep_from(self, end: int) -> int:
        if self._start is not None:
            return self._start
        return max(0, self._frames_done * self._frame - self._pad)


CALL_CHUNK_SAMPLES = round(CALL_PACKET_S * SAMPLE_RATE_HZ)  # one packet of a WebRTC call


def windows_of(windower: Windower, items: Iterable[AudioChunk | VideoFrame]) -> list[Window]:
    """Every window `windower` cuts from `items`, the stream's end included."""
    return [window for item in items for window in windower.push(item)] + windower.flush()


def audio_windows(
    audio: np.ndarray, stream: StreamId, settings: WindowSettings, vad: VoiceActivityDetector | None
) -> list[Window]:
    """The windows the agent cuts from 16 kHz samples (float32 [n]) arriving as a call's 20 ms packets."""
    chunks = (AudioChunk(i / SAMPLE_RATE_HZ, audio[i: i + CALL_CHUNK_SAMPLES])
              for i in range(0, len(audio), CALL_CHUNK_SAMPLES))  # fmt: skip
    return windows_of(Windower(stream, settings, vad), chunks)
