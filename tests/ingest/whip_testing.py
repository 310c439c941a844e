"""Helpers for ingest tests: a collecting session handler, reference decoding, envelope correlation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from agent.sessions import IngestSession
from agent.whip import WhipServer
from core.types import SAMPLE_RATE_HZ, AudioChunk, VideoFrame

TOKEN = "test-token-1"
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
GRID_CLIP = DATA / "av" / "grid" / "grid_bbaf2n.mpg"  # 3.0 s, 25 fps video + speech
SPEECH_CLIP = DATA / "speech" / "ljspeech" / "LJ001-0002.flac"  # 1.9 s, audio only


class Collector:
    """An `on_session` that keeps everything each session delivered, keyed by stream key."""

    def __init__(self) -> None:
        self.keep_media = True  # False: count only, retain nothing (leak tests)
        self.media: dict[str, list[AudioChunk | VideoFrame]] = {}
        self.audio_s: dict[str, float] = {}
        self.frame_count: dict[str, int] = {}
        self.sessions: dict[str, IngestSession] = {}
        self.closed: dict[str, str | None] = {}
        self._ended: dict[str, asyncio.Event] = {}

    async def __call__(self, session: IngestSession) -> None:
        key = session.stream.key
        if self.keep_media:
            self.sessions[key] = session
        items = self.media.setdefault(key, [])
        self.audio_s[key] = 0.0
        self.frame_count[key] = 0
        try:
            async for item in session.media():
                if isinstance(item, AudioChunk):
                    self.audio_s[key] += len(item.samples) / SAMPLE_RATE_HZ
                else:
                    self.frame_count[key] += 1
                if self.keep_media:
                    items.append(item)
        finally:
            self.closed[key] = session.closed
            self._event(key).set()

    def _event(self, key: str) -> asyncio.Event:
        return self._ended.setdefault(key, asyncio.Event())

    async def ended(self, key: str, timeout_s: float = 10.0) -> IngestSession | None:
        await asyncio.wait_for(self._event(key).wait(), timeout_s)
        return self.sessions.get(key)

    def audio(self, key: str) -> list[AudioChunk]:
        return [i for i in self.media.get(key, []) if isinstance(i, AudioChunk)]

    def frames(self, key: str) -> list[VideoFrame]:
        return [i for i in self.media.get(key, []) if isinstance(i, VideoFrame)]


ServerFactory = Callable[..., Awaitable[tuple[WhipServer, str, Collector]]]


def stream_url(base: str, call_id: str = "call-1", participant_id: str = "p1", role: str = "patient") -> str:
    return f"{base}?call_id={call_id}&participant_id={participant_id}&role={role}"


def decode_audio_16k(path: Path) -> np.ndarray:
    """The file's audio as float32 mono 16 kHz, decoded directly (the reference for what WebRTC delivered)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def decode_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        out = []
        first = None
        for frame in container.decode(stream):
            first = frame.time if first is None else first
            out.append((float(frame.time - first), frame.to_ndarray(format="rgb24")))
        return out


def envelope(audio: np.ndarray, hop: int = 160) -> np.ndarray:
    """RMS per 10 ms."""
    n = len(audio) // hop
    return np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1))


def best_envelope_correlation(
    received: np.ndarray, reference: np.ndarray, max_lag: int = 20
) -> tuple[float, int]:
    """Highest Pearson r between the 10 ms envelopes over lags of +-max_lag hops; returns (r, lag_hops)."""
    a, b = envelope(received), envelope(reference)
    best = (-1.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) :]
        y = b[max(-lag, 0) :]
        n = min(len(x), len(y))
        r = float(np.corrcoef(x[:n], y[:n])[0, 1])
        best = max(best, (r, lag))
    return best


class FreezingTrack(MediaStreamTrack):
    """Silent 20 ms Opus-ready frames in real time, then nothing at all (a capture or network that froze)."""

    kind = "audio"

    def __init__(self, frames_before_freeze: int) -> None:
        super().__init__()
        self._left = frames_before_freeze
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self._left <= 0:
            await asyncio.Event().wait()  # never returns; the connection itself stays up
        self._left -= 1
        await asyncio.sleep(0.02)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
        frame.sample_rate = 48_000
        frame.pts = self._pts
        frame.time_base = Fraction(1, 48_000)
        self._pts += 960
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames, in real time; frames in `skip` are never sent (RTP time moves on)."""

    kind = "audio"

    def __init__(self, frames: int, skip: range = range(0)) -> None:
        super().__init__()
        self._frames = frames
        self._skip = skip
        self._index = 0

    async def recv(self) -> av.AudioFrame:
        while self._index in self._skip:  # lost on the way: only the timeline moves on
            self._index += 1
            await asyncio.sleep(0.02)
        if self._index >= self._frames:
            self.stop()
            raise MediaStreamError
        start = self._index * 960
        self._index += 1
        await asyncio.sleep(0.02)
        tone = (np.sin(2 * np.pi * 440 * (start + np.arange(960)) / 48_000) * 10_000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48_000
        frame.pts = start
        frame.time_base = Fraction(1, 48_000)
        return frame


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class RawPeer:
    """A bare aiortc client for driving the endpoint step by step (bad input, vanishing peers)."""

    def __init__(self, *tracks: MediaStreamTrack, video_only: bool = False) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if video_only:
            self.pc.addTransceiver("video", direction="sendonly")
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        self.location: str | None = None

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        return self.pc.localDescription.sdp

    async def connect(self, http: aiohttp.ClientSession, url: str, sdp: str | None = None) -> Answer:
        answer = await post(http, url, sdp or await self.offer())
        assert answer.status == 201, answer.text
        self.location = urljoin(url, answer.headers["Location"])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        return answer

    async def wait_connected(self, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.pc.connectionState != "connected":  # noqa: ASYNC110 (aiortc state, no event to await)
                await asyncio.sleep(0.01)

    async def delete(self, http: aiohttp.ClientSession) -> int:
        assert self.location is not None
        async with http.delete(self.location, headers=auth()) as response:
            return response.status


@dataclass
class RawAnswer:
    status: int  # 0: the connection closed without an answer
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(
    method: str,
    target: str,
    headers: dict[str, str | bytes] | None = None,
    body: bytes = b"",
    *,
    chunked: bool = False,
) -> bytes:
    """One HTTP/1.1 request as raw bytes; header values may be bytes (anything at all); the body is framed by
    Content-Length, or chunked (one chunk per 700 bytes) when `chunked`."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [body[i : i + 700] for i in range(0, len(body), 700)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


async def raw_http(
    port: int, pieces: list[bytes], *, pause_s: float = 0.0, timeout_s: float = 10.0
) -> RawAnswer:
    """Send `pieces` as separate writes, `pause_s` apart, on a fresh connection; read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout_s):
            for index, piece in enumerate(pieces):
                if index and pause_s:
                    await asyncio.sleep(pause_s)
                writer.write(piece)
                await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in filter(None, header_lines):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = headers.get("content-length")
            body = await (reader.readexactly(int(length)) if length is not None else reader.read())
            return RawAnswer(int(status_line.split()[1]), headers, body)
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        return RawAnswer(0, {}, b"")
    finally:
        writer.close()


def port_of(url: str) -> int:
    return int(urlsplit(url).port or 80)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: str | bytes,
    *,
    headers: dict[str, str] | None = None,
    content_type: str = "application/sdp",
) -> Answer:
    sent = {**auth(), "Content-Type": content_type, **(headers or {})}
    data = body.encode() if isinstance(body, str) else body
    async with http.post(url, data=data, headers=sent) as response:
        return Answer(response.status, dict(response.headers), await response.text())


def answer_ports(sdp: str) -> set[int]:
    """UDP ports of the host candidates in an SDP answer."""
    return {int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:")}


def make_clip(
    path: Path, *, duration_s: float = 1.0, fps: int = 15, size: tuple[int, int] = (160, 120)
) -> Path:
    """A small generated recording: a 440 Hz tone and a moving gradient (H.264 + AAC in MP4)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = container.add_stream("aac", rate=48_000)
        audio.layout = "mono"
        for i in range(round(duration_s * fps)):
            rgb = np.zeros((size[1], size[0], 3), np.uint8)
            rgb[..., 0] = (np.arange(size[0]) * 255 // size[0] + i * 8) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        n = 1024
        for start in range(0, round(duration_s * 48_000), n):
            t = (start + np.arange(n)) / 48_000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = 48_000
            frame.pts = start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path
