"""A WHIP client that sends a recording over real WebRTC: tests, replay through ingest, load tests.

    result = await stream_file("call.mp4", "http://host:8080/whip?call_id=c1&participant_id=p1", token)

    recording = encode_recording("call.mp4")          # load tests: encode once (Opus + VP8) ...
    results = await asyncio.gather(*(stream_recording(recording, url, token) for url in urls))  # ... send many

The file is played by aiortc's MediaPlayer (paced in real time unless `realtime=False`), offered with a
bearer token, and the session is DELETEd once the file has ended and the last packets had time to arrive.
`stream_recording` sends packets encoded beforehand instead, so a client costs packetisation and SRTP only:
the server receives what aiortc's own encoders would send (Opus 20 ms frames, VP8), except that the packets
cannot answer a keyframe request, so a keyframe goes out every `KEYFRAME_INTERVAL_S` anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from core.call_codec import CALL_OPUS_BITRATE, CALL_OPUS_RATE_HZ, CALL_PACKET_S
from core.errors import AffectstreamError, MediaError, NoAudioError

log = logging.getLogger(__name__)

AUDIO_CODECS = ("opus", "PCMU", "PCMA")
# The receiver's audio jitter buffer releases a packet only once 4 more have arrived (aiortc: 80 ms), so the
# last packets of a recording would never be decoded: a short silent tail pushes them through.
TAIL_S = 0.12
FRAME_S = CALL_PACKET_S
OPUS_RATE_HZ = CALL_OPUS_RATE_HZ
OPUS_BITRATE = CALL_OPUS_BITRATE  # aiortc's OpusEncoder (core/call_codec.py reproduces what it does to a voice)
VP8_BITRATE = 500_000  # aiortc's Vp8Encoder default
KEYFRAME_INTERVAL_S = 2.0
CLOSE_TIMEOUT_S = 5.0  # aiortc's close can wait forever on a sender task cancelled before it started


class StreamError(AffectstreamError):
    """The WHIP endpoint refused the stream or the connection failed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class StreamResult:
    session_url: str
    audio_s: float  # media time of the recording's audio that was sent (tail excluded)
    video_frames: int
    connect_s: float  # POST to ICE + DTLS connected
    wall_s: float


@dataclass(frozen=True, slots=True)
class EncodedRecording:
    """A recording encoded once as aiortc sends media (Opus stereo 48 kHz in 20 ms packets, VP8), to be sent
    to any number of sessions; the packets are shared, never modified."""

    name: str
    audio: tuple[av.Packet, ...]  # Opus, the silent tail (TAIL_S) included
    video: tuple[av.Packet, ...]  # VP8, empty when the file has no video
    audio_s: float  # media time of the recording's audio (tail excluded)


class _SourceTrack(MediaStreamTrack):
    """Forwards a player track, counts what it sends, signals the end; audio gets a silent tail."""

    def __init__(self, source: MediaStreamTrack, *, tail_s: float, realtime: bool) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._tail_frames = round(tail_s / FRAME_S) if source.kind == "audio" else 0
        self._realtime = realtime
        self._last: av.AudioFrame | None = None
        self.sent_s = 0.0
        self.frames = 0
        self.finished = asyncio.Event()

    async def recv(self) -> av.frame.Frame | av.packet.Packet:
        try:
            frame = await self._source.recv()
        except MediaStreamError:
            if self._tail_frames > 0 and self._last is not None:
                self._tail_frames -= 1
                return await self._silence()
            self.finished.set()
            self.stop()
            raise
        self.frames += 1
        if isinstance(frame, av.AudioFrame):
            self._last = frame
            self.sent_s += frame.samples / frame.sample_rate
        return frame

    async def discard(self) -> None:
        """Read and drop the player's frames (a kind the server will not take): its queue is unbounded."""
        with contextlib.suppress(MediaStreamError):
            while True:
                await self._source.recv()

    async def _silence(self) -> av.AudioFrame:
        last = self._last
        assert last is not None and last.pts is not None
        array = np.zeros_like(last.to_ndarray())
        frame = av.AudioFrame.from_ndarray(array, format=last.format.name, layout=last.layout.name)
        frame.sample_rate = last.sample_rate
        frame.time_base = last.time_base or fractions.Fraction(1, last.sample_rate)
        frame.pts = last.pts + last.samples
        self._last = frame
        if self._realtime:
            await asyncio.sleep(frame.samples / frame.sample_rate)
        return frame

    def stop(self) -> None:
        self.finished.set()
        super().stop()
        self._source.stop()


class _PlayClock:
    """One stream's media clock: both tracks send a packet when the wall clock reaches its media time."""

    def __init__(self) -> None:
        self._origin: float | None = None

    async def wait(self, media_s: float) -> None:
        if self._origin is None:
            self._origin = time.monotonic() - media_s
        delay = self._origin + media_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class _PacketTrack(MediaStreamTrack):
    """Sends encoded packets as they are (aiortc's sender only packetises them), paced by a shared clock."""

    def __init__(self, kind: str, packets: Sequence[av.Packet], clock: _PlayClock | None, *, counted: int) -> None:
        super().__init__()
        self.kind = kind
        self._packets = packets
        self._clock = clock  # None: as fast as the connection goes
        self._counted = counted  # packets of the recording (the rest is the silent tail)
        self._index = 0
        self.sent_s = 0.0
        self.frames = 0
        self.finished = asyncio.Event()

    async def recv(self) -> av.Packet:
        if self._index >= len(self._packets) or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        packet = self._packets[self._index]
        self._index += 1
        if self._clock is not None:
            assert packet.pts is not None and packet.time_base is not None
            await self._clock.wait(float(packet.pts * packet.time_base))
        if self._index <= self._counted:
            self.frames += 1
            if self.kind == "audio":
                self.sent_s += FRAME_S
        return packet

    def stop(self) -> None:
        self.finished.set()
        super().stop()


_Track = _SourceTrack | _PacketTrack


async def stream_file(
    path: str | Path,
    url: str,
    token: str,
    *,
    realtime: bool = True,
    audio_codec: str | None = None,
    ice_servers: tuple[str, ...] = (),
    connect_timeout_s: float = 15.0,
    drain_s: float = 0.3,
) -> StreamResult:
    """Send `path` to the WHIP endpoint `url`; returns when the file has been sent and the session ended."""
    player = _open(Path(path), realtime)
    tracks: list[_Track] = [
        _SourceTrack(track, tail_s=TAIL_S, realtime=realtime)
        for track in (player.audio, player.video)
        if track is not None
    ]
    codecs = {"audio": audio_codec} if audio_codec is not None else {}
    return await _send(
        Path(path).name, tracks, url, token, codecs, ice_servers=ice_servers,
        connect_timeout_s=connect_timeout_s, drain_s=drain_s,
    )  # fmt: skip


async def stream_recording(
    recording: EncodedRecording,
    url: str,
    token: str,
    *,
    realtime: bool = True,
    ice_servers: tuple[str, ...] = (),
    connect_timeout_s: float = 15.0,
    drain_s: float = 0.3,
) -> StreamResult:
    """Send pre-encoded packets (`encode_recording`) to the WHIP endpoint `url`, as `stream_file` sends a file."""
    clock = _PlayClock() if realtime else None
    counted = round(recording.audio_s / FRAME_S)
    tracks: list[_Track] = [_PacketTrack("audio", recording.audio, clock, counted=counted)]
    if recording.video:
        tracks.append(_PacketTrack("video", recording.video, clock, counted=len(recording.video)))
    return await _send(
        recording.name, tracks, url, token, {"audio": "opus", "video": "VP8"}, ice_servers=ice_servers,
        connect_timeout_s=connect_timeout_s, drain_s=drain_s,
    )  # fmt: skip


async def _send(
    name: str,
    tracks: list[_Track],
    url: str,
    token: str,
    codecs: dict[str, str],
    *,
    ice_servers: tuple[str, ...],
    connect_timeout_s: float,
    drain_s: float,
) -> StreamResult:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers]))
    started = time.monotonic()
    location: str | None = None
    drains: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as http:
        try:
            transceivers = _add_tracks(pc, tracks, codecs)
            await pc.setLocalDescription(await pc.createOffer())
            assert pc.localDescription is not None
            location, answer = await _post_offer(http, url, token, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            connect_s = await _wait_connected(pc, connect_timeout_s) - started
            # a track the server answered "inactive" (video it has no use for) is never sent
            sending = [t for t, tr in zip(tracks, transceivers, strict=True) if tr.currentDirection == "sendonly"]
            unsent = [t for t in tracks if t not in sending and isinstance(t, _SourceTrack)]
            drains = [asyncio.create_task(t.discard()) for t in unsent]
            log.info("streaming %s to %s (connected in %.2f s)", name, location, connect_s)
            await _wait_finished(pc, sending)
            await asyncio.sleep(drain_s)  # let the last packets reach the server before ending the session
        finally:
            for task in drains:
                task.cancel()
            for track in tracks:
                track.stop()
            if location is not None:
                await _delete(http, location, token)
            await _close(pc)
    audio = tracks[0]
    video_frames = tracks[1].frames if len(tracks) > 1 else 0
    return StreamResult(location or url, audio.sent_s, video_frames, connect_s, time.monotonic() - started)


def encode_recording(path: str | Path) -> EncodedRecording:
    """Encode a file's first audio and video streams once, as aiortc's encoders would (blocking, seconds)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(str(path), "no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise NoAudioError(str(path), "no audio track to stream")
            audio, audio_s = _encode_opus(container)
        with av.open(str(path)) as container:
            video = _encode_vp8(container) if container.streams.video else ()
    except av.FFmpegError as exc:
        raise MediaError(str(path), f"cannot encode: {exc}") from None
    return EncodedRecording(path.name, audio, video, audio_s)


def _encode_opus(container: av.container.InputContainer) -> tuple[tuple[av.Packet, ...], float]:
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE_HZ, frame_size=960)
    encoder = av.CodecContext.create("libopus", "w")
    encoder.bit_rate = OPUS_BITRATE
    encoder.sample_rate = OPUS_RATE_HZ
    encoder.layout = "stereo"
    encoder.format = "s16"
    packets: list[av.Packet] = []
    samples = 0

    def encode(frames: list[av.AudioFrame]) -> None:
        nonlocal samples
        for frame in frames:
            samples += frame.samples
            frame.pts = None  # the encoder numbers them; renumbered below from 0
            packets.extend(encoder.encode(frame))

    for decoded in container.decode(audio=0):
        encode(resampler.resample(decoded))
    encode(resampler.resample(None))
    audio_s = samples / OPUS_RATE_HZ
    silence = np.zeros((1, 2 * 960), dtype=np.int16)
    for _ in range(round(TAIL_S / FRAME_S)):
        frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="stereo")
        frame.sample_rate = OPUS_RATE_HZ
        encode([frame])
    packets += encoder.encode(None)
    for index, packet in enumerate(packets):
        packet.pts = packet.dts = index * 960  # Opus's pre-skip makes the encoder's first pts negative
        packet.time_base = fractions.Fraction(1, OPUS_RATE_HZ)
    return tuple(packets), audio_s


def _encode_vp8(container: av.container.InputContainer) -> tuple[av.Packet, ...]:
    stream = container.streams.video[0]
    time_base = stream.time_base or fractions.Fraction(1, 90_000)
    encoder: av.VideoCodecContext | None = None
    packets: list[av.Packet] = []
    first_pts: int | None = None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        if encoder is None or first_pts is None:
            encoder = _vp8_encoder(frame.width, frame.height, time_base, stream.average_rate or 30)
            first_pts = frame.pts
        pts = frame.pts - first_pts
        frame = frame.reformat(format="yuv420p")
        frame.pts = pts
        frame.pict_type = av.video.frame.PictureType.NONE  # keyframes where the encoder puts them
        packets += encoder.encode(frame)
    if encoder is not None:
        packets += encoder.encode(None)
    for packet in packets:
        packet.time_base = time_base
    return tuple(packets)


def _vp8_encoder(
    width: int, height: int, time_base: fractions.Fraction, rate: fractions.Fraction | int
) -> av.VideoCodecContext:
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = time_base
    encoder.framerate = fractions.Fraction(rate)
    encoder.bit_rate = VP8_BITRATE
    encoder.gop_size = max(1, round(KEYFRAME_INTERVAL_S * rate))
    encoder.qmin, encoder.qmax = 2, 56
    # aiortc's real-time CBR settings (aiortc/codecs/vpx.py), so the server decodes what aiortc would send
    encoder.options = {
        "bufsize": str(VP8_BITRATE), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
        "minrate": str(VP8_BITRATE), "maxrate": str(VP8_BITRATE), "noise-sensitivity": "4",
        "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100",
    }  # fmt: skip
    return encoder


def _open(path: Path, realtime: bool) -> MediaPlayer:
    if not path.is_file():
        raise MediaError(str(path), "no such file")
    try:
        player = MediaPlayer(str(path))
    except av.FFmpegError as exc:
        raise MediaError(str(path), f"cannot open: {exc}") from None
    if player.audio is None:
        raise NoAudioError(str(path), "no audio track to stream")
    if not realtime:
        player._throttle_playback = False  # as fast as the encoders go
    return player


def _add_tracks(pc: RTCPeerConnection, tracks: Sequence[_Track], codecs: dict[str, str]) -> list[RTCRtpTransceiver]:
    """One send-only transceiver per track; `codecs`: kind -> the only codec to offer for it (else aiortc's)."""
    audio_codec = codecs.get("audio")
    if audio_codec is not None and audio_codec.lower() not in {c.lower() for c in AUDIO_CODECS}:
        raise ValueError(f"audio codec must be one of {AUDIO_CODECS}; got {audio_codec!r}")
    transceivers = []
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceivers.append(transceiver)
        codec = codecs.get(track.kind)
        if codec is not None:
            offered = RTCRtpSender.getCapabilities(track.kind).codecs
            transceiver.setCodecPreferences(
                [c for c in offered if c.mimeType.lower() == f"{track.kind}/{codec.lower()}"]
            )
    return transceivers


async def _post_offer(http: aiohttp.ClientSession, url: str, token: str, offer: str) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    try:
        async with http.post(url, data=offer.encode(), headers=headers) as response:
            body = await response.text()
            if response.status != 201:
                raise StreamError(
                    f"WHIP endpoint answered {response.status}: {body.strip()[:200]}",
                    status=response.status,
                    retryable=response.status in (503, 429),
                )
            location = response.headers.get("Location")
            if not location:
                raise StreamError("WHIP endpoint answered 201 without a Location header", status=201)
            return urljoin(url, location), body
    except aiohttp.ClientError as exc:
        raise StreamError(f"cannot reach WHIP endpoint {url}: {exc}", retryable=True) from None


async def _wait_connected(pc: RTCPeerConnection, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise StreamError(f"WebRTC connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise StreamError(f"WebRTC connection not established within {timeout_s} s", retryable=True)
        await asyncio.sleep(0.01)
    return time.monotonic()


async def _wait_finished(pc: RTCPeerConnection, tracks: Sequence[_Track]) -> None:
    pending = {asyncio.create_task(track.finished.wait()) for track in tracks}
    try:
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if pc.connectionState in ("failed", "closed"):
                raise StreamError(f"WebRTC connection {pc.connectionState} while streaming")
    finally:
        for task in pending:
            task.cancel()


async def _close(pc: RTCPeerConnection) -> None:
    try:
        await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("peer connection did not close within %.0f s", CLOSE_TIMEOUT_S)


async def _delete(http: aiohttp.ClientSession, location: str, token: str) -> None:
    with contextlib.suppress(aiohttp.ClientError):
        async with http.delete(location, headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status not in (200, 204, 404):
                log.warning("DELETE %s answered %s", location, response.status)
