"""A WHIP client that sends a recording over real WebRTC: tests, replay through ingest, load tests.

    result = await stream_file("call.mp4", "http://host:8080/whip?call_id=c1&participant_id=p1", token)

The file is played by aiortc's MediaPlayer (paced in real time unless `realtime=False`), offered with a
bearer token, and the session is DELETEd once the file has ended and the last packets had time to arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
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
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from core.errors import AffectstreamError, MediaError, NoAudioError

log = logging.getLogger(__name__)

AUDIO_CODECS = ("opus", "PCMU", "PCMA")
# The receiver's audio jitter buffer releases a packet only once 4 more have arrived (aiortc: 80 ms), so the
# last packets of a recording would never be decoded: a short silent tail pushes them through.
TAIL_S = 0.12
FRAME_S = 0.02
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
    tracks = [
        _SourceTrack(track, tail_s=TAIL_S, realtime=realtime)
        for track in (player.audio, player.video)
        if track is not None
    ]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers]))
    started = time.monotonic()
    location: str | None = None
    async with aiohttp.ClientSession() as http:
        try:
            _add_tracks(pc, tracks, audio_codec)
            await pc.setLocalDescription(await pc.createOffer())
            assert pc.localDescription is not None
            location, answer = await _post_offer(http, url, token, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            connect_s = await _wait_connected(pc, connect_timeout_s) - started
            log.info("streaming %s to %s (connected in %.2f s)", Path(path).name, location, connect_s)
            await _wait_finished(pc, tracks)
            await asyncio.sleep(drain_s)  # let the last packets reach the server before ending the session
        finally:
            for track in tracks:
                track.stop()
            if location is not None:
                await _delete(http, location, token)
            await _close(pc)
    audio = tracks[0]
    video_frames = tracks[1].frames if len(tracks) > 1 else 0
    return StreamResult(location or url, audio.sent_s, video_frames, connect_s, time.monotonic() - started)


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


def _add_tracks(pc: RTCPeerConnection, tracks: list[_SourceTrack], audio_codec: str | None) -> None:
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "audio" and audio_codec is not None:
            if audio_codec not in AUDIO_CODECS:
                raise ValueError(f"audio codec must be one of {AUDIO_CODECS}; got {audio_codec!r}")
            codecs = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences(
                [c for c in codecs if c.mimeType.lower() == f"audio/{audio_codec.lower()}"]
            )


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


async def _wait_finished(pc: RTCPeerConnection, tracks: list[_SourceTrack]) -> None:
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
