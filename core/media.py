"""Recorded media → the same `AudioChunk` / `VideoFrame` objects live ingest produces (PyAV): probing,
demuxing and decoding a file, skipping corrupt packets, trimming codec padding and clipping to a time range.

Media time is `core.audiotime.AudioClock`'s (audio resampled to float32 mono 16 kHz, stamped by sample count
from the first frame's PTS; a real gap in the PTS is left for the windower to fill with silence) and the merge
into media-time order is `core.mediatime.recorded_merger`'s. Video frames are RGB uint8 stamped with their PTS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np

from core.audiotime import AudioClock
from core.errors import MediaError, NoAudioError
from core.mediatime import MediaItem, MediaMerger, recorded_merger
from core.types import SAMPLE_RATE_HZ, AudioChunk, VideoFrame

log = logging.getLogger(__name__)

_MAX_BAD_PACKETS = 25  # isolated corrupt packets are skipped (as ffmpeg does); this many is a corrupt file
_TRUNCATION_TOLERANCE_S = 0.5
_SEEK_MIN_S = 30.0  # below this, decoding from the start is cheap and exact
_SEEK_MARGIN_S = 5.0
_MAX_PADDING_S = 0.1  # decoded audio this far past the declared end is codec padding


@dataclass(frozen=True, slots=True)
class MediaInfo:
    path: str
    format_name: str
    duration_s: float
    has_audio: bool
    has_video: bool
    audio_codec: str | None = None
    audio_sample_rate_hz: int | None = None
    audio_channels: int | None = None
    video_codec: str | None = None
    video_fps: float | None = None
    width: int | None = None
    height: int | None = None


def probe(path: str | Path) -> MediaInfo:
    """What a file holds, without decoding it; raises MediaError if ffmpeg cannot read it."""
    container = _open(path)
    try:
        return _media_info(str(path), container)
    finally:
        container.close()


def decode_file(
    path: str | Path, *, start_s: float | None = None, end_s: float | None = None
) -> Iterator[MediaItem]:
    """Audio chunks and video frames of `path` in media-time order, optionally limited to [start_s, end_s)."""
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    container = _open(path)
    try:
        info = _media_info(str(path), container)
        if not info.has_audio:
            what = f"{info.format_name}, {info.video_codec} video" if info.has_video else info.format_name
            raise NoAudioError(str(path), f"has no audio track (ffmpeg reads it as {what})")
        yield from _decode(str(path), container, info, start_s, end_s)
    finally:
        container.close()


def decode_audio(path: str | Path) -> np.ndarray:
    """The file's whole audio as the agent decodes it (`decode_file`): float32 [n], mono 16 kHz."""
    return np.concatenate([item.samples for item in decode_file(path) if isinstance(item, AudioChunk)])


def _open(path: str | Path) -> av.container.InputContainer:
    file = Path(path)
    if not file.exists():
        raise MediaError(str(path), "no such file")
    if not file.is_file():
        raise MediaError(str(path), "not a regular file")
    if file.stat().st_size == 0:
        raise MediaError(str(path), "empty file (0 bytes)")
    try:
        return av.open(str(file), mode="r")
    except av.error.FFmpegError as exc:
        raise MediaError(str(path), f"not a media file ffmpeg can read ({_reason(exc)})") from exc
    except OSError as exc:
        raise MediaError(str(path), f"cannot open: {exc.strerror or exc}") from exc


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _media_info(path: str, container: av.container.InputContainer) -> MediaInfo:
    audio = container.streams.audio[0] if container.streams.audio else None
    video = container.streams.video[0] if container.streams.video else None
    if audio is None and video is None:
        raise MediaError(path, "no audio or video stream (unsupported content)")
    duration_s = _duration_s(container, audio, video)
    fps = None
    if video is not None and video.average_rate:
        fps = float(video.average_rate)
    return MediaInfo(
        path=path,
        format_name=container.format.name,
        duration_s=duration_s,
        has_audio=audio is not None,
        has_video=video is not None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        audio_sample_rate_hz=audio.codec_context.sample_rate if audio is not None else None,
        audio_channels=audio.codec_context.channels if audio is not None else None,
        video_codec=video.codec_context.name if video is not None else None,
        video_fps=fps,
        width=video.codec_context.width if video is not None else None,
        height=video.codec_context.height if video is not None else None,
    )


def _duration_s(container: av.container.InputContainer, *streams: av.stream.Stream | None) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    longest = 0.0
    for stream in streams:
        if stream is not None and stream.duration is not None and stream.time_base is not None:
            longest = max(longest, float(stream.duration * stream.time_base))
    return longest


def _decode(
    path: str,
    container: av.container.InputContainer,
    info: MediaInfo,
    start_s: float | None,
    end_s: float | None,
) -> Iterator[MediaItem]:
    audio_stream = container.streams.audio[0]
    video_stream = container.streams.video[0] if container.streams.video else None
    streams: list[av.stream.Stream] = [audio_stream]
    if video_stream is not None:
        video_stream.thread_type = "AUTO"
        streams.append(video_stream)
    seeked = False
    if start_s is not None and start_s > _SEEK_MIN_S:
        # Seeking lands near, not on, the target in some containers (MPEG-PS): seek early, trim exactly.
        container.seek(int((start_s - _SEEK_MARGIN_S) * av.time_base), any_frame=False, backward=True)
        seeked = True
    clock = AudioClock()
    merger = recorded_merger(has_video=video_stream is not None)
    padding = _CodecPaddingTrim(info.duration_s if info.duration_s > 0 else None)
    step_s = 1 / info.video_fps if info.video_fps else 0.04
    errors = _PacketErrors(path, seeked=seeked)
    last_video_s: float | None = None
    reached_end = True
    for packet in _demux(path, container, streams):
        for frame in errors.decode(packet, audio_started=clock.samples_out > 0):
            if isinstance(frame, av.AudioFrame):
                _push_audio(merger, padding.push(clock.push(frame)))
            else:
                video = _video_frame(frame, last_video_s, step_s)
                merger.push_video(video.time_s, video)
                last_video_s = video.time_s
        if end_s is not None and _passed(end_s, clock.end_s, last_video_s, has_video=video_stream is not None):
            reached_end = False
            break
        yield from _clip(_ready(merger), start_s, end_s)
    if reached_end:
        _push_audio(merger, padding.push(clock.flush()))
    _push_audio(merger, padding.finish())
    merger.end_audio()
    merger.end_video()
    yield from _clip(_ready(merger), start_s, end_s)
    if reached_end:
        _check_complete(path, info, clock, start_s, end_s)


def _push_audio(merger: MediaMerger[VideoFrame], chunks: list[AudioChunk]) -> None:
    for chunk in chunks:
        merger.push_audio(chunk)


def _ready(merger: MediaMerger[VideoFrame]) -> list[MediaItem]:
    """Everything the merger can release now, in media-time order."""
    out: list[MediaItem] = []
    while (item := merger.pop()) is not None:
        out.append(item if isinstance(item, AudioChunk) else item[1])
    return out


def _passed(time_s: float, audio_end_s: float | None, last_video_s: float | None, *, has_video: bool) -> bool:
    """Whether both streams have been decoded up to `time_s`."""
    audio_done = audio_end_s is not None and audio_end_s >= time_s
    video_done = not has_video or (last_video_s is not None and last_video_s >= time_s)
    return audio_done and video_done


class _PacketErrors:
    """Skips isolated corrupt packets (as ffmpeg does) and fails once there are too many."""

    def __init__(self, path: str, *, seeked: bool) -> None:
        self.path = path
        self.seeked = seeked
        self.count = 0

    def decode(self, packet: av.Packet, *, audio_started: bool) -> list[av.AudioFrame | av.VideoFrame]:
        try:
            return list(packet.decode())
        except av.error.FFmpegError as exc:
            if self.seeked and not audio_started:
                return []  # a packet cut by the seek
            self.count += 1
            log.warning("%s: skipped a corrupt %s packet (%s)", self.path, packet.stream.type, _reason(exc))
            if self.count > _MAX_BAD_PACKETS:
                raise MediaError(self.path, f"corrupt: {self.count} undecodable packets") from exc
            return []


class _CodecPaddingTrim:
    """Drops audio decoded past the container's declared end when it is codec padding.

    MP3 and AAC decode whole codec frames, so the last one can run tens of milliseconds past the media's end.
    Audio beyond the declared end is held; if it grows past _MAX_PADDING_S the declaration was only an
    estimate and everything is released, otherwise it is cut at the declared end.
    """

    def __init__(self, declared_end_s: float | None) -> None:
        self._end_s = declared_end_s
        self._held: list[AudioChunk] = []
        self._released = declared_end_s is None

    def push(self, chunks: list[AudioChunk]) -> list[AudioChunk]:
        if self._released:
            return chunks
        assert self._end_s is not None
        out = []
        for chunk in chunks:
            if chunk.end_s <= self._end_s and not self._held:
                out.append(chunk)
            else:
                self._held.append(chunk)
        if self._held and self._held[-1].end_s - self._end_s > _MAX_PADDING_S:
            out.extend(self._held)
            self._held, self._released = [], True
        return out

    def finish(self) -> list[AudioChunk]:
        held, self._held = self._held, []
        if self._released or not held:
            return held
        kept = [_clip_chunk(chunk, None, self._end_s) for chunk in held]
        return [chunk for chunk in kept if chunk is not None]


def _demux(
    path: str, container: av.container.InputContainer, streams: list[av.stream.Stream]
) -> Iterator[av.Packet]:
    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"corrupt container data ({_reason(exc)})") from exc
        yield packet  # including PyAV's final empty packets: decoding them drains the decoders


def _video_frame(frame: av.VideoFrame, last_s: float | None, step_s: float) -> VideoFrame:
    time_s = frame.time
    if time_s is None:  # no PTS: step on from the previous frame
        time_s = last_s + step_s if last_s is not None else 0.0
    return VideoFrame(time_s=float(time_s), rgb=frame.to_ndarray(format="rgb24"))  # uint8 [h, w, 3]


def _clip(items: list[MediaItem], start_s: float | None, end_s: float | None) -> Iterator[MediaItem]:
    for item in items:
        if isinstance(item, VideoFrame):
            if (start_s is None or item.time_s >= start_s) and (end_s is None or item.time_s < end_s):
                yield item
            continue
        chunk = _clip_chunk(item, start_s, end_s)
        if chunk is not None:
            yield chunk


def _clip_chunk(chunk: AudioChunk, start_s: float | None, end_s: float | None) -> AudioChunk | None:
    first = 0
    last = len(chunk.samples)
    if start_s is not None and chunk.start_s < start_s:
        first = min(last, round((start_s - chunk.start_s) * SAMPLE_RATE_HZ))
    if end_s is not None and chunk.end_s > end_s:
        last = max(0, round((end_s - chunk.start_s) * SAMPLE_RATE_HZ))
    if last <= first:
        return None
    if first == 0 and last == len(chunk.samples):
        return chunk
    return AudioChunk(start_s=chunk.start_s + first / SAMPLE_RATE_HZ, samples=chunk.samples[first:last])


def _check_complete(
    path: str, info: MediaInfo, clock: AudioClock, start_s: float | None, end_s: float | None
) -> None:
    if clock.samples_out == 0:
        raise MediaError(path, "corrupt: no decodable audio")
    declared_end_s = info.duration_s if end_s is None else min(end_s, info.duration_s)
    if clock.end_s is not None and declared_end_s - clock.end_s > _TRUNCATION_TOLERANCE_S:
        raise MediaError(
            path, f"truncated: audio ends at {clock.end_s:.2f} s but the file declares {declared_end_s:.2f} s"
        )
