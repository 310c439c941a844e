"""Media time of both tracks: video frames sampled, then merged with the audio into one time-ordered sequence.
Sans-IO: the async shell that reads aiortc tracks is `agent.sessions`; the demuxer of files is `core.media`.

Audio reaches media time through `core.audiotime` (live `AudioConverter`, recorded `AudioClock`), which
resamples with `core.resample` and judges gaps with `core.gaps`.
- `FrameSampler` keeps at most `vision_fps` video frames per second of media time and holds a bounded number
  of them; when the consumer falls behind the newest frames win and each eviction is counted.
- `MediaMerger` releases audio and video in media-time order: live, a frame reaches the windower before the
  audio that closes its window; `recorded_merger` sets the same merger up for a recording (`core.media`).
- `sample_frames` applies the live sampling rule to a recording's decoded items (replay, dataset builder).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Generic, Literal, TypeVar

from core.types import SAMPLE_RATE_HZ, AudioChunk, VideoFrame

T = TypeVar("T")
MediaItem = AudioChunk | VideoFrame


class OverloadError(Exception):
    """The consumer fell further behind than the ingest buffer allows."""


class FrameSampler(Generic[T]):
    """Keeps at most `fps` frames per second of media time; holds at most `max_pending`, newest first.

    `fps=None` keeps every frame and `max_pending=None` holds any number (a recording's frames, for the
    consumer to sample).
    """

    def __init__(self, fps: float | None, max_pending: int | None) -> None:
        if (fps is not None and fps <= 0) or (max_pending is not None and max_pending < 1):
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
        if self.fps is not None:
            slot = math.floor(time_s * self.fps + 1e-6)
            if self._last_slot is not None and slot <= self._last_slot:
                self.skipped += 1
                return False
            self._last_slot = slot
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
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

    A chunk counts at its end (`audio_at="end"`, live: a frame goes before the audio that closes its window)
    or at its start. A chunk is released once every frame before that time has arrived; a frame at `t` once all
    audio counted up to `t` has (before any audio: once `t <= start_s`, where media time begins). When one
    track stalls for `max_lag_s` of the other's media time, the other is released alone; a frame arriving after
    audio already passed its time is dropped as late unless `keep_late_frames` (audio is never dropped: past
    `max_audio_s` of unconsumed audio, `push_audio` raises OverloadError).
    """

    def __init__(
        self,
        sampler: FrameSampler[T],
        *,
        has_video: bool,
        max_lag_s: float = 1.0,
        max_audio_s: float = 30.0,
        audio_at: Literal["start", "end"] = "end",
        keep_late_frames: bool = False,
        start_s: float = 0.0,
    ) -> None:
        self.sampler = sampler
        self._audio: deque[AudioChunk] = deque()
        self._audio_s = 0.0
        self._at_start = audio_at == "start"
        self._audio_mark = start_s  # time of the last audio received
        self._video_mark = -math.inf  # time of the last frame received
        self._audio_ended = False
        self._video_ended = not has_video
        self._released_audio_s = start_s  # time of the last audio released
        self._max_lag_s = max_lag_s
        self._max_audio_s = max_audio_s
        self._keep_late = keep_late_frames
        self.late_frames = 0

    def push_audio(self, chunk: AudioChunk) -> None:
        self._audio.append(chunk)
        self._audio_s += len(chunk.samples) / SAMPLE_RATE_HZ
        self._audio_mark = max(self._audio_mark, self._time_s(chunk))
        if self._audio_s > self._max_audio_s:
            raise OverloadError(f"{self._audio_s:.1f} s of audio not consumed (limit {self._max_audio_s} s)")

    def push_video(self, time_s: float, frame: T) -> None:
        self._video_mark = max(self._video_mark, time_s)
        if time_s < self._released_audio_s:
            self.late_frames += 1
            if not self._keep_late:
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
        audio_t = self._time_s(self._audio[0]) if self._audio else None
        video_t = self.sampler.peek_time()
        if audio_t is not None and (video_t is None or audio_t <= video_t):
            if self._video_ended or self._video_mark >= audio_t or self._stalled(self._audio_mark, audio_t):
                return self._pop_audio()
        elif video_t is not None:
            if self._audio_ended or self._audio_mark >= video_t or self._stalled(self._video_mark, video_t):
                return self.sampler.pop()
        return None

    def clear(self) -> None:
        self._audio.clear()
        self._audio_s = 0.0
        self.sampler.clear()

    def _time_s(self, chunk: AudioChunk) -> float:
        return chunk.start_s if self._at_start else chunk.end_s

    def _stalled(self, own_mark: float, time_s: float) -> bool:
        return own_mark - time_s >= self._max_lag_s

    def _pop_audio(self) -> AudioChunk:
        chunk = self._audio.popleft()
        self._audio_s -= len(chunk.samples) / SAMPLE_RATE_HZ
        self._released_audio_s = max(self._released_audio_s, self._time_s(chunk))
        return chunk


def recorded_merger(*, has_video: bool) -> MediaMerger[VideoFrame]:
    """The merger of a recording (`core.media.decode_file`). Where it differs from live ingest's, and why:
    - every frame is kept: sampling to `vision_fps` is the consumer's (`sample_frames`);
    - a chunk counts at its start: decode_file's items are in start-time order (tests/test_media.py);
    - media time may start anywhere (the first PTS), and a frame behind audio already released is passed on,
      not dropped (a badly interleaved file would otherwise lose its video);
    - one stream may run 2 s ahead of the other in the container, and the decoder waits for its consumer,
      so unconsumed audio is never an overload.
    """
    return MediaMerger(
        FrameSampler(None, None),
        has_video=has_video,
        max_lag_s=math.nextafter(2.0, math.inf),  # more than 2 s (the lag rule is `>=`)
        max_audio_s=math.inf,
        audio_at="start",
        keep_late_frames=True,
        start_s=-math.inf,
    )


def sample_frames(items: Iterable[MediaItem], fps: float) -> Iterator[MediaItem]:
    """Audio unchanged; video frames kept as live ingest keeps them (at most one per 1/fps slot)."""
    sampler: FrameSampler[VideoFrame] = FrameSampler(fps, max_pending=1)
    for item in items:
        if isinstance(item, AudioChunk):
            yield item
        elif sampler.offer(item.time_s, item):
            yield sampler.pop()[1]
