"""Settings-level behaviour of the WHIP server and the loopback candidate modes."""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from whip_testing import SPEECH_CLIP, TOKEN, ServerFactory, stream_url

from agent.loopback import configure_loopback, current_mode, host_addresses
from agent.sessions import IngestSession
from agent.settings import IngestSettings, Settings
from agent.stream_client import StreamError, stream_file
from agent.whip import WhipServer
from core.errors import ConfigError


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
    with pytest.raises(StreamError, match="403") as refused:
        await stream_file(SPEECH_CLIP, stream_url(url), "wrong-token")
    assert refused.value.status == 403 and not refused.value.retryable
    with pytest.raises(StreamError, match="cannot reach"):
        await stream_file(SPEECH_CLIP, "http://127.0.0.1:9/whip?call_id=c&participant_id=p", TOKEN)
