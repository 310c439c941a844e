"""Settings-level behaviour of the WHIP server and the loopback candidate modes."""

from __future__ import annotations

import asyncio

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from whip_testing import SPEECH_CLIP, TOKEN, ServerFactory, stream_url

from agent import sessions
from agent.loopback import configure_loopback, current_mode, host_addresses
from agent.sessions import IngestSession, SessionLimits
from agent.settings import IngestSettings, Settings
from agent.stream_client import StreamError, stream_file
from agent.whip import WhipServer
from core.errors import ConfigError
from core.types import SAMPLE_RATE_HZ, AudioChunk, StreamId, VideoFrame


async def _nothing(session: IngestSession) -> None:
    return None


def test_server_refuses_to_start_without_tokens() -> None:
    with pytest.raises(ConfigError, match="ingest.tokens"):
        WhipServer(IngestSettings(tokens=[]), _nothing)


def test_tokens_and_ice_servers_from_comma_separated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKENS", "alpha, beta")
    monkeypatch.setenv("AFFECTSTREAM_INGEST__ICE_SERVERS", "stun:stun.example:3478,turn:turn.example:3478")
    ingest = Settings().ingest
    assert [t.get_secret_value() for t in ingest.tokens] == ["alpha", "beta"]
    assert ingest.ice_servers == ["stun:stun.example:3478", "turn:turn.example:3478"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("only", lambda real: ["127.0.0.1"]),
        ("never", lambda real: real),
        ("auto", lambda real: real or ["127.0.0.1"]),
    ],
)
def test_loopback_modes(mode: str, expected) -> None:  # type: ignore[no-untyped-def]
    previous = current_mode()
    configure_loopback("never")
    real = host_addresses(True, True)
    assert "127.0.0.1" not in real  # what aioice offers by itself
    try:
        configure_loopback(mode)  # type: ignore[arg-type]
        assert host_addresses(True, True) == expected(real)
        assert aioice.ice.get_host_addresses(True, True) == expected(real)  # what aiortc will gather
    finally:
        configure_loopback(previous)
    with pytest.raises(ValueError, match="loopback mode"):
        configure_loopback("sometimes")  # type: ignore[arg-type]


def test_auto_mode_offers_loopback_on_a_host_without_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    # This host has a network interface, so aioice's view of a loopback-only host is simulated here; the same
    # path was checked for real in a network namespace holding only `lo` (`unshare -n`).
    previous = current_mode()
    monkeypatch.setattr("agent.loopback._aioice_host_addresses", lambda use_ipv4, use_ipv6: [])
    try:
        configure_loopback("auto")
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        configure_loopback("never")
        assert aioice.ice.get_host_addresses(True, True) == []
    finally:
        configure_loopback(previous)


@pytest.mark.integration
async def test_slow_consumer_closes_the_session_as_overload_instead_of_dropping_audio(
    whip_server: ServerFactory,
) -> None:
    closed: list[str | None] = []

    async def stuck(session: IngestSession) -> None:
        media = session.media()
        await anext(media)  # takes one chunk, then stops reading
        await session.wait_closed()
        closed.append(session.closed)
        await media.aclose()

    server, url, _ = await whip_server(handler=stuck, media_buffer_s=0.5)
    with pytest.raises(StreamError):  # the server ends the connection while the client is still sending
        await stream_file(SPEECH_CLIP, stream_url(url), TOKEN)
    await asyncio.sleep(0.2)
    assert closed == ["overload"]
    assert server.active_sessions == 0


@pytest.mark.integration
async def test_stream_client_reports_refusals(whip_server: ServerFactory) -> None:
    _, url, _ = await whip_server()
    with pytest.raises(StreamError, match="401") as refused:
        await stream_file(SPEECH_CLIP, stream_url(url), "wrong-token")
    assert refused.value.status == 401 and not refused.value.retryable
    with pytest.raises(StreamError, match="cannot reach"):
        await stream_file(SPEECH_CLIP, "http://127.0.0.1:9/whip?call_id=c&participant_id=p", TOKEN)


async def test_session_hands_waiting_audio_on_as_one_chunk_in_media_time_order() -> None:
    """Audio chunks already waiting in the merger leave joined (one pass through the windower and the VAD
    instead of one per 20 ms), never across a video frame, a gap in media time or COALESCE_MAX_S."""
    session = IngestSession("s1", StreamId("c", "p"), RTCPeerConnection(), SessionLimits(), has_video=True)
    merger = session._merger
    chunk = 320  # 20 ms
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(100 * chunk).astype(np.float32)  # 2 s in 20 ms chunks
    for i in range(0, 50 * chunk, chunk):  # 1 s, with frames at 0.1 s and 0.5 s
        merger.push_audio(AudioChunk(i / SAMPLE_RATE_HZ, audio[i : i + chunk]))
    merger.push_video(0.1, av.VideoFrame(4, 2, "rgb24"))
    merger.push_video(0.5, av.VideoFrame(4, 2, "rgb24"))
    for i in range(60 * chunk, 100 * chunk, chunk):  # 0.2 s missing, then 0.8 s more
        merger.push_audio(AudioChunk(i / SAMPLE_RATE_HZ, audio[i : i + chunk]))
    merger.end_audio()
    merger.end_video()

    items = [item async for item in session.media()]
    spans = [
        (round(i.start_s, 3), round(i.end_s, 3)) if isinstance(i, AudioChunk) else i.time_s for i in items
    ]
    # frames count at their time, audio at its end: a frame goes before the chunk that passes it
    assert spans == [(0.0, 0.1), 0.1, (0.1, 0.5), 0.5, (0.5, 1.0), (1.2, 1.7), (1.7, 2.0)]
    joined = np.concatenate([i.samples for i in items if isinstance(i, AudioChunk)])
    assert np.array_equal(joined, np.concatenate([audio[: 50 * chunk], audio[60 * chunk :]]))
    assert all(i.rgb.shape == (2, 4, 3) for i in items if isinstance(i, VideoFrame))
    assert sessions.COALESCE_MAX_S == 0.5
    await session.close("delete")


@pytest.mark.parametrize(("video", "uses_vision", "received"),
                         [("auto", False, False), ("auto", True, True), ("always", False, True)])
def test_the_agent_takes_video_only_when_a_model_looks_at_faces(video: str, uses_vision: bool,
                                                               received: bool) -> None:
    """ingest.video: auto answers video "inactive" unless a loaded model's features use the frames."""
    from types import SimpleNamespace

    from agent.server import AgentServer
    from agent.settings import Settings

    class Pipeline(SimpleNamespace):
        def with_sinks(self, **_: object) -> Pipeline:
            return self

    server = AgentServer(Settings.model_validate({"ingest": {"video": video, "tokens": ["t" * 32]}}))
    server.attach(SimpleNamespace(pipeline=Pipeline(extractor=SimpleNamespace(uses_vision=uses_vision))))  # type: ignore[arg-type]
    assert server.whip.receive_video is received
