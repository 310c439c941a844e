"""WHIP ingest sessions: one WebRTC peer connection = one participant's stream.

`IngestSession` is the async shell around `core.audiotime` and `core.mediatime`: it reads the aiortc tracks,
feeds the merger and hands the pipeline an async iterator of media. `SessionRegistry` enforces the limits and
owns the sessions' lifetime; closing a session releases its peer connection, reader tasks and buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from agent import metrics
from core.audiotime import AudioConverter
from core.mediatime import FrameSampler, MediaMerger, OverloadError
from core.types import SAMPLE_RATE_HZ, AudioChunk, StreamId, VideoFrame

log = logging.getLogger(__name__)

CloseReason = Literal[
    "delete", "peer_ended", "ice_timeout", "ice_failed", "media_timeout", "overload", "shutdown", "error"
]


PC_CLOSE_TIMEOUT_S = 5.0  # aiortc's close can hang on a task cancelled before it ran (loop shutdown)
READER_DRAIN_S = 2.0  # after the peer connection closes, time for decoded frames to reach the readers
# Audio chunks already waiting in the merger leave as one (each costs a pass through the windower and a VAD
# run); only what has arrived is joined, so nothing waits for it.
COALESCE_MAX_S = 0.5


_RGB_EXECUTOR: ThreadPoolExecutor | None = None


def _rgb_executor() -> ThreadPoolExecutor:
    # Its own small pool: frame conversion must not queue behind long jobs (Whisper) in the default executor.
    global _RGB_EXECUTOR
    if _RGB_EXECUTOR is None:
        _RGB_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-rgb")
    return _RGB_EXECUTOR


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")  # uint8 [h, w, 3]


def _joined(parts: list[AudioChunk]) -> AudioChunk:
    if len(parts) == 1:
        return parts[0]
    return AudioChunk(start_s=parts[0].start_s, samples=np.concatenate([p.samples for p in parts]))


@dataclass(frozen=True, slots=True)
class IngestStats:
    audio_s: float  # media time of audio delivered by the peer, silence fills included
    audio_input_rate_hz: int | None  # as decoded: 48000 (Opus), 8000 (PCMU/PCMA)
    audio_gaps_filled: int
    audio_gap_s: float
    video_frames_received: int
    video_frames_sampled: int
    video_frames_dropped: int  # sampled frames evicted because the consumer was behind (newest wins)
    video_frames_late: int  # frames that arrived after audio had passed their time


@dataclass(frozen=True, slots=True)
class SessionLimits:
    vision_fps: float = 10.0
    ice_timeout_s: float = 15.0
    media_timeout_s: float = 15.0
    media_buffer_s: float = 30.0
    max_lag_s: float = 1.0


class IngestSession:
    """One participant's live media; `media()` yields it in media time until the session ends."""

    def __init__(
        self,
        session_id: str,
        stream: StreamId,
        pc: RTCPeerConnection,
        limits: SessionLimits,
        *,
        has_video: bool,
    ) -> None:
        self.id = session_id
        self.stream = stream
        self.limits = limits
        self.closed: CloseReason | None = None
        self._pc: RTCPeerConnection | None = pc
        self._has_video = has_video
        self._audio = AudioConverter()
        max_pending = max(2, math.ceil(limits.vision_fps * (limits.max_lag_s + 1.0)))
        self._merger: MediaMerger[av.VideoFrame] = MediaMerger(
            FrameSampler(limits.vision_fps, max_pending),
            has_video=has_video,
            max_lag_s=limits.max_lag_s,
            max_audio_s=limits.media_buffer_s,
        )
        self._readers: list[asyncio.Task[None]] = []
        self._track_kinds: set[str] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._active_readers: set[asyncio.Task[None]] = set()  # readers whose track delivered a frame
        self._wake = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._connected = asyncio.Event()
        self._last_media = time.monotonic()
        self._video_received = 0
        self._video_origin: float | None = None
        self._media_taken = False
        self._close_lock = asyncio.Lock()
        pc.on("connectionstatechange", self._on_state)
        pc.on("track", self.add_track)

    def __repr__(self) -> str:
        return f"IngestSession({self.id}, {self.stream.key}, closed={self.closed})"

    @property
    def log_extra(self) -> dict[str, str]:
        return {"session_id": self.id, "stream": self.stream.key}

    def stats(self) -> IngestStats:
        sampler = self._merger.sampler
        return IngestStats(
            audio_s=self._audio.duration_s,
            audio_input_rate_hz=self._audio.input_rate_hz,
            audio_gaps_filled=self._audio.gaps_filled,
            audio_gap_s=self._audio.gap_s,
            video_frames_received=self._video_received,
            video_frames_sampled=sampler.kept,
            video_frames_dropped=sampler.dropped,
            video_frames_late=self._merger.late_frames,
        )

    def add_track(self, track: MediaStreamTrack) -> None:
        if self.closed is not None:
            return
        # One track of each kind: a second would be merged into the same timeline, a patchwork of two sources.
        # agent/sdp_offer.py refuses such offers; this keeps the first should one slip through.
        if track.kind in self._track_kinds:
            log.warning("ingest session %s: extra %s track ignored", self.id, track.kind, extra=self.log_extra)
            return
        if track.kind == "audio":
            self._readers.append(asyncio.create_task(self._read_audio(track), name=f"ingest-audio-{self.id}"))
        elif track.kind == "video" and self._has_video:  # else answered "inactive": nothing will come
            self._readers.append(asyncio.create_task(self._read_video(track), name=f"ingest-video-{self.id}"))
        self._track_kinds.add(track.kind)

    async def media(self) -> AsyncIterator[AudioChunk | VideoFrame]:
        """Audio chunks and sampled RGB frames in media time; ends when the session does."""
        if self._media_taken:
            raise RuntimeError("IngestSession.media() can be iterated only once")
        self._media_taken = True
        held: AudioChunk | tuple[float, av.VideoFrame] | None = None  # popped while joining audio
        while True:
            item, held = (held, None) if held is not None else (self._merger.pop(), None)
            if isinstance(item, AudioChunk):
                chunk, held = self._join_waiting_audio(item)
                yield chunk
            elif item is not None:
                time_s, frame = item
                loop = asyncio.get_running_loop()
                rgb = await loop.run_in_executor(_rgb_executor(), _to_rgb, frame)
                yield VideoFrame(time_s=time_s, rgb=rgb)
            elif self._merger.done:
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    def _join_waiting_audio(
        self, first: AudioChunk
    ) -> tuple[AudioChunk, AudioChunk | tuple[float, av.VideoFrame] | None]:
        """`first` joined with the contiguous audio chunks the merger releases right after it (up to
        COALESCE_MAX_S), and the item that ended the run (to be handled next), if any."""
        parts = [first]
        size = len(first.samples)
        limit = round(COALESCE_MAX_S * SAMPLE_RATE_HZ)
        while size < limit:
            item = self._merger.pop()
            if not isinstance(item, AudioChunk) or abs(item.start_s - parts[-1].end_s) > 1e-6:
                return _joined(parts), item
            parts.append(item)
            size += len(item.samples)
        return _joined(parts), None

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self._connected.is_set()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def seconds_since_media(self) -> float:
        return time.monotonic() - self._last_media

    async def close(self, reason: CloseReason) -> None:
        """End the session: close the peer connection and let the readers drain; idempotent."""
        async with self._close_lock:
            if self.closed is None:
                self.closed = reason
                log.info("ingest session %s closed: %s", self.id, reason, extra=self.log_extra)
            pc, self._pc = self._pc, None
            if pc is not None:
                try:
                    await asyncio.wait_for(pc.close(), PC_CLOSE_TIMEOUT_S)
                except TimeoutError:
                    log.warning("ingest session %s: peer connection did not close", self.id, extra=self.log_extra)
            await self._stop_readers()
            self._merger.end_audio()
            self._merger.end_video()
            self._wake.set()
            self._closed_event.set()

    async def _stop_readers(self) -> None:
        # A track that received media ends by itself once its decoder drains; one that never did has no
        # decoder to end it, and nothing to drain.
        for task in self._readers:
            if task not in self._active_readers:
                task.cancel()
        if self._readers:
            await asyncio.wait(self._readers, timeout=READER_DRAIN_S)
        for task in self._readers:
            task.cancel()
        if self._readers:
            await asyncio.wait(self._readers)

    def release(self) -> None:
        """Drop buffered media once nobody will read it."""
        self._merger.clear()
        self._readers.clear()
        self._active_readers.clear()
        self._wake.set()

    def _on_state(self) -> None:
        pc = self._pc
        if pc is None:
            return
        state = pc.connectionState
        if state == "connected":
            self._last_media = time.monotonic()
            self._connected.set()
        elif state == "failed":
            self._spawn_close("ice_failed")

    def _spawn_close(self, reason: CloseReason) -> None:
        if self.closed is None:
            task = asyncio.create_task(self.close(reason), name=f"ingest-close-{self.id}")
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self._mark_active()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for chunk in self._audio.convert(frame):
                    self._merger.push_audio(chunk)
                self._wake.set()
        except MediaStreamError:
            pass
        except OverloadError as exc:
            log.error("ingest session %s: consumer too slow: %s", self.id, exc, extra=self.log_extra)
            self._spawn_close("overload")
        except Exception:
            log.exception("ingest session %s: audio track failed", self.id, extra=self.log_extra)
            self._spawn_close("error")
        finally:
            with contextlib.suppress(OverloadError):
                for chunk in self._audio.flush():
                    self._merger.push_audio(chunk)
            self._merger.end_audio()
            self._wake.set()
            self._on_track_ended()

    async def _read_video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self._mark_active()
                self._video_received += 1
                if not isinstance(frame, av.VideoFrame) or frame.pts is None or frame.time_base is None:
                    continue
                time_s = float(frame.pts * frame.time_base)
                if self._video_origin is None:
                    self._video_origin = time_s
                lost = self._merger.sampler.dropped + self._merger.late_frames
                self._merger.push_video(time_s - self._video_origin, frame)
                lost = self._merger.sampler.dropped + self._merger.late_frames - lost
                if lost:
                    metrics.VIDEO_FRAMES_DROPPED.inc(lost)
                self._wake.set()
        except MediaStreamError:
            pass
        except Exception:
            log.exception("ingest session %s: video track failed", self.id, extra=self.log_extra)
        finally:
            self._merger.end_video()
            self._wake.set()

    def _mark_active(self) -> None:
        self._last_media = time.monotonic()
        task = asyncio.current_task()
        if task is not None:
            self._active_readers.add(task)

    def _on_track_ended(self) -> None:
        # the peer stopped sending audio (RTCP BYE or closed connection): nothing left to score
        if self.closed is None:
            self._spawn_close("peer_ended")


class RegistryFull(Exception):
    """No session slot left."""


class StreamBusy(Exception):
    """That stream already has a live session."""


class StreamClosing(Exception):
    """That stream's last session has ended but is still flushing: a reconnect may retry in a moment."""


class SessionRegistry:
    """Live sessions by id, with slots reserved while an offer is being answered."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, IngestSession] = {}
        self._reserved: set[str] = set()  # stream keys of offers being answered

    def __len__(self) -> int:
        """Slots taken: live sessions and offers being answered (not closed ones whose handler still runs)."""
        return sum(s.closed is None for s in self._sessions.values()) + len(self._reserved)

    @property
    def full(self) -> bool:
        """Every slot is taken: a new offer would be refused."""
        return len(self) >= self.max_sessions

    @property
    def answering(self) -> bool:
        """An offer is being answered (its session is not registered yet)."""
        return bool(self._reserved)

    def reserve(self, stream: StreamId) -> None:
        same = [s for s in self._sessions.values() if s.stream.key == stream.key]
        if stream.key in self._reserved or any(s.closed is None for s in same):
            raise StreamBusy(f"stream {stream.key} already has a live session")
        if same:
            raise StreamClosing(f"stream {stream.key} has a session still closing; retry shortly")
        if self.full:
            raise RegistryFull(f"{self.max_sessions} sessions already live")
        self._reserved.add(stream.key)

    def unreserve(self, stream: StreamId) -> None:
        self._reserved.discard(stream.key)

    def add(self, session: IngestSession) -> None:
        self._reserved.discard(session.stream.key)
        self._sessions[session.id] = session

    def get(self, session_id: str) -> IngestSession | None:
        """The live session with that id (None once it has closed)."""
        session = self._sessions.get(session_id)
        return session if session is not None and session.closed is None else None

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def sessions(self) -> list[IngestSession]:
        return list(self._sessions.values())
