"""Issue 17, the HTTP side: what a hostile or unlucky network does to `serve`, over real sockets.

Each test names the item of the issue it holds to: offers split across TCP segments (1), unreadable
credentials (3), stream ids with a trailing newline (4), two microphones in one offer (5), idle and half-sent
connections (6), tokens in aiohttp's bad-request log (10), a quick reconnect after DELETE (12), and offers
whose SDP aiortc cannot parse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription
from pydantic import SecretStr
from whip_testing import (
    TOKEN,
    Collector,
    FreezingTrack,
    RawPeer,
    ServerFactory,
    ToneTrack,
    auth,
    http_request,
    port_of,
    post,
    raw_http,
    stream_url,
)

from agent import metrics
from agent.logging_setup import REDACTED, redact
from agent.sdp_offer import OfferError, check_offer
from agent.server import AgentServer
from agent.sessions import IngestSession, SessionLimits
from agent.settings import IngestSettings
from agent.whip import WhipServer
from core.errors import ConfigError
from core.types import StreamId

pytestmark = pytest.mark.integration

SDP = {"Content-Type": "application/sdp"}


def rejected(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("affectstream_sessions_rejected_total", {"reason": reason}) or 0.0


async def av_offer() -> tuple[RawPeer, str]:
    """An offer sending one audio and one video track (audio first, as browsers order them)."""
    peer = RawPeer(FreezingTrack(0))
    peer.pc.addTransceiver("video", direction="sendonly")
    return peer, await peer.offer()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


# -- 1: a body is read whole, however it is split, within its limit and its time ---------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_offer_sent_in_pieces_with_pauses_gets_every_m_line_answered(
    whip_server: ServerFactory, chunked: bool
) -> None:
    _, url, _ = await whip_server()
    peer, offer = await av_offer()
    request = http_request(
        "POST", "/whip?call_id=call-1&participant_id=pieces", {**auth(), **SDP}, offer.encode(), chunked=chunked
    )
    body_start = request.index(b"\r\n\r\n") + 4
    at_video = request.index(b"m=video")
    pieces = split_at(request, [body_start - 10, body_start + 40, at_video, len(request) - 5])
    assert len(pieces) == 5
    answer = await raw_http(port_of(url), pieces, pause_s=0.3)
    assert answer.status == 201, answer.text
    media = SessionDescription.parse(answer.text).media
    assert [m.kind for m in media] == ["audio", "video"]
    assert all(m.port != 0 and m.direction == "recvonly" for m in media)  # answered, none refused
    await peer.pc.close()


async def test_a_body_too_slow_or_too_large_is_refused_and_counted(whip_server: ServerFactory) -> None:
    server, url, _ = await whip_server(body_timeout_s=0.5, max_sdp_bytes=4096)
    port = port_of(url)
    offer = (await RawPeer(FreezingTrack(0)).offer()).encode()
    target = "/whip?call_id=call-1&participant_id=slow"
    slow_before, large_before = rejected("bad_request"), rejected("bad_offer")

    request = http_request("POST", target, {**auth(), **SDP}, offer)
    started = time.monotonic()
    stalled = await raw_http(port, [request[: len(request) - 200]])  # the rest never comes
    assert stalled.status == 408 and "did not arrive within 0.5 s" in stalled.text
    assert 0.4 < time.monotonic() - started < 3.0

    declared = http_request("POST", target, {**auth(), **SDP}, b"v=0" + b"x" * 5000)
    too_large = await raw_http(port, [declared[: declared.index(b"\r\n\r\n") + 4]])  # refused on its head
    assert too_large.status == 413 and "larger than 4096 bytes" in too_large.text
    chunked = await raw_http(port, [http_request("POST", target, {**auth(), **SDP}, offer * 5, chunked=True)])
    assert chunked.status == 413

    assert rejected("bad_request") - slow_before == 1
    assert rejected("bad_offer") - large_before == 2
    assert len(server.registry) == 0


# -- 3: unreadable credentials are a counted 400 or 401 on every guarded route -----------------------------------

UNREADABLE = [
    (b"Bearer " + TOKEN.encode() + b"\xff", 400, "bad_request", "header Authorization is not UTF-8 text"),
    (b"Bearer \xc3\x28", 400, "bad_request", "header Authorization is not UTF-8 text"),
    (b"\xfe\xff " + TOKEN.encode(), 400, "bad_request", "header Authorization is not UTF-8 text"),
    ("Bearer t\u00f6ken".encode(), 401, "auth", "malformed credentials: printable ASCII only"),  # UTF-8, not ASCII
]


@pytest.mark.parametrize(
    ("credential", "status", "reason", "message"), UNREADABLE, ids=["token+0xff", "bad-utf8", "bad-scheme", "utf8"]
)
async def test_unreadable_authorization_is_a_counted_refusal_on_post_delete_patch_and_feed(
    whip_server: ServerFactory,
    agent_server: tuple[AgentServer, str],
    credential: bytes,
    status: int,
    reason: str,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server, url, _ = await whip_server()
    _, feed_base = agent_server
    live = RawPeer(FreezingTrack(0))
    async with aiohttp.ClientSession() as http:
        await live.connect(http, stream_url(url, participant_id="live"))
    assert live.location is not None
    session_path = urlsplit(live.location).path
    offer = (await RawPeer(FreezingTrack(0)).offer()).encode()
    headers = {"Authorization": credential, **SDP}
    requests = {
        "POST": (url, http_request("POST", "/whip?call_id=call-1&participant_id=p2", headers, offer)),
        "DELETE": (url, http_request("DELETE", session_path, headers)),
        "PATCH": (url, http_request("PATCH", session_path, headers, b"a=end-of-candidates\r\n")),
        "feed": (feed_base, http_request("GET", "/streams/call-1/live/scores", headers)),
    }
    for name, (base, request) in requests.items():
        before = rejected(reason)
        answer = await raw_http(port_of(base), [request])
        assert (answer.status, answer.text) == (status, message), name
        assert rejected(reason) - before == 1, name
    assert [s.stream.key for s in server.registry.sessions()] == ["call-1/live"]  # still there: not deleted
    assert server.registry.sessions()[0].closed is None
    assert_no_traceback(caplog.records)
    await live.pc.close()


@pytest.mark.parametrize("path", ["/whip", "/no/such/path", "/healthz"])
async def test_any_header_that_is_not_utf8_is_a_counted_400_before_routing(
    agent_server: tuple[AgentServer, str], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    # found by tests/ingest/test_http_fuzz.py: aiohttp's Expect handler echoed the value, then failed to encode it
    caplog.set_level(logging.DEBUG)
    _, base = agent_server
    before = rejected("bad_request")
    for name in ("Expect", "X-Call-Id", "Accept"):
        answer = await raw_http(port_of(base), [http_request("PUT", path, {name: b"100-continue\x80"})])
        assert (answer.status, answer.text) == (400, f"header {name} is not UTF-8 text")
    assert rejected("bad_request") - before == 3
    assert_no_traceback(caplog.records)


# -- 4: one validation of stream ids, matched whole --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["nlcall\n", "call\r", "\ncall", "call\n\n", "ca ll", "call\x00", "caf\u00e9", ""])
def test_a_stream_id_is_matched_whole(bad: str) -> None:
    with pytest.raises(ValueError, match="call_id must be"):
        StreamId(bad, "p1")
    with pytest.raises(ValueError, match="participant_id must be"):
        StreamId("call", bad)
    assert StreamId("call-1.a:b_c", "p1").key == "call-1.a:b_c/p1"


async def test_a_trailing_newline_in_an_id_is_refused_by_whip_and_the_feed(
    whip_server: ServerFactory, agent_server: tuple[AgentServer, str]
) -> None:
    server, url, _ = await whip_server()
    _, feed_base = agent_server
    offer = await RawPeer(FreezingTrack(0)).offer()
    async with aiohttp.ClientSession() as http:
        for query, field in (("call_id=nlcall%0A&participant_id=p1", "call_id"),
                             ("call_id=nlcall&participant_id=p1%0A", "participant_id"),
                             ("call_id=nlcall&participant_id=p1&role=patient%0D%0A", "role")):  # fmt: skip
            answer = await post(http, f"{url}?{query}", offer)
            assert answer.status == 400 and answer.text.startswith(f"{field} must be"), answer.text
        async with http.get(f"{feed_base}/streams/nlcall%0A/p1/scores", headers=auth()) as response:
            assert response.status == 400 and (await response.text()).startswith("call_id must be")
    assert len(server.registry) == 0 and not server.registry.sessions()


# -- 5: one microphone per session --------------------------------------------------------------------------------


async def test_an_offer_with_two_sending_audio_or_video_tracks_is_refused(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server()
    two_mics = RawPeer(FreezingTrack(0), FreezingTrack(0))
    two_cameras = RawPeer(FreezingTrack(0))
    for _ in range(2):
        two_cameras.pc.addTransceiver("video", direction="sendonly")
    mic_and_listener = RawPeer(FreezingTrack(0))
    mic_and_listener.pc.addTransceiver("audio", direction="recvonly")  # receives only: not a second source
    before = rejected("bad_offer")
    async with aiohttp.ClientSession() as http:
        mics = await post(http, stream_url(url, participant_id="mics"), await two_mics.offer())
        assert mics.status == 400 and mics.text.startswith("offer sends 2 audio tracks; a session takes one audio")
        cameras = await post(http, stream_url(url, participant_id="cams"), await two_cameras.offer())
        assert cameras.status == 400 and cameras.text.startswith("offer sends 2 video tracks")
        assert rejected("bad_offer") - before == 2 and len(server.registry) == 0
        accepted = await post(http, stream_url(url, participant_id="one"), await mic_and_listener.offer())
        assert accepted.status == 201
    for peer in (two_mics, two_cameras, mic_and_listener):
        await peer.pc.close()


async def test_a_session_reads_one_audio_track_should_a_second_arrive(caplog: pytest.LogCaptureFixture) -> None:
    pc = RTCPeerConnection()
    session = IngestSession("s1", StreamId("call-1", "p1"), pc, SessionLimits(), has_video=False)
    first, second = ToneTrack(25), ToneTrack(25)
    with caplog.at_level(logging.WARNING, logger="agent.sessions"):
        session.add_track(first)
        session.add_track(second)
    assert [r.getMessage() for r in caplog.records] == ["ingest session s1: extra audio track ignored"]
    chunks = [item async for item in session.media()]
    await asyncio.wait_for(session.wait_closed(), 5)
    assert chunks and session.closed == "peer_ended"
    assert first.readyState == "ended" and second.readyState == "live"  # the second was never read
    second.stop()


# -- 6: idle and half-sent connections are let go --------------------------------------------------------------


async def _closed_by_server(port: int, sent: list[bytes], trickle: bool) -> float:
    """Seconds until the server closes a connection that sent `sent` (a byte every 0.1 s when trickling)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in sent:
            writer.write(piece)
        if trickle:
            for _ in range(50):  # 5 s: longer than the idle timeout
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(b"x")
        async with asyncio.timeout(5.0):
            while await reader.read(4096):
                pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    return time.monotonic() - started


async def test_idle_and_half_sent_connections_are_closed_while_real_work_goes_on(whip_server: ServerFactory) -> None:
    server, url, _ = await whip_server(idle_timeout_s=0.5)
    port = port_of(url)
    live = RawPeer(FreezingTrack(0))
    async with aiohttp.ClientSession() as http:
        await live.connect(http, stream_url(url, participant_id="live"))
        session = server.registry.sessions()[0]
        options = http_request("OPTIONS", "/whip").replace(b"Connection: close", b"Connection: keep-alive")
        kinds = {
            "idle": ([], False),
            "half request line": ([b"POST /whip HT"], False),
            "half headers": ([b"POST /whip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()], False),
            "slow loris": ([b"POST /whip HTTP/1.1\r\nX-Padding: "], True),
            "kept alive after a request": ([options], False),
        }
        clients = [_closed_by_server(port, sent, trickle) for sent, trickle in kinds.values() for _ in range(20)]
        waiting = asyncio.gather(*clients)
        await asyncio.sleep(0.2)
        async with http.options(url) as response:  # the server answers meanwhile
            assert response.status == 204
        closed_after = await waiting
    assert max(closed_after) < 3.0, dict(zip(kinds, closed_after[::20], strict=True))
    assert min(closed_after) > 0.4
    assert session.closed is None and server.registry.get(session.id) is session  # the call goes on
    await live.pc.close()


async def test_a_score_feed_subscriber_that_went_away_is_released(
    agent_server: tuple[AgentServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # found by tests/ingest/test_http_fuzz.py: with no scores for its stream, nothing ever noticed it had gone
    monkeypatch.setattr("agent.feed.HEARTBEAT_S", 0.2)
    server, base = agent_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(base))
    writer.write(http_request("GET", "/streams/call-1/quiet/scores", auth()))
    assert (await reader.readuntil(b": connected\n\n")).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.readuntil(b": heartbeat\n\n"), 2)  # comes while no score does
    assert server.feed.subscribers("call-1/quiet") == 1
    writer.close()
    async with asyncio.timeout(3):
        while server.feed.subscribers("call-1/quiet"):  # noqa: ASYNC110 (polling server state)
            await asyncio.sleep(0.05)


# -- 10: no token in any log line ----------------------------------------------------------------------------------

CONTROL_AFTER_TOKEN = b"Authorization: Bearer " + TOKEN.encode() + b"\x01"


def _bad_request() -> bytes:
    return b"POST /whip?call_id=c&participant_id=p HTTP/1.1\r\nHost: x\r\n" + CONTROL_AFTER_TOKEN + b"\r\n\r\n"


async def test_a_control_byte_after_the_token_is_one_counted_line_without_the_token(
    whip_server: ServerFactory, serve_logging: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url, _ = await whip_server()
    serve_logging("json")
    before = rejected("bad_request")
    answer = await raw_http(port_of(url), [_bad_request()])
    assert answer.status == 400
    assert rejected("bad_request") - before == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert TOKEN not in json.dumps(lines)
    refused = [line for line in lines if line["logger"] == "aiohttp.server"]
    assert [(line["level"], line["message"]) for line in refused] == [
        ("WARNING", "malformed HTTP request refused (400): Invalid header value char")
    ]
    assert not any("exc" in line for line in lines)


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_the_log_filter_redacts_the_token_in_aiohttps_own_bad_request_log(
    serve_logging: Callable[[str], None], capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    # a server built without agent/http_limits.py's logger: aiohttp logs the raw header line with a traceback
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    serve_logging(log_format)
    try:
        answer = await raw_http(runner.addresses[0][1], [_bad_request()])
    finally:
        await runner.cleanup()
    assert answer.status == 400
    err = capsys.readouterr().err
    assert "Error handling request" in err and "Invalid header value char" in err  # the log was provoked
    assert "Authorization: Bearer [redacted]" in err
    assert TOKEN not in err


def test_the_log_filter_redacts_every_form_a_credential_takes() -> None:
    for text in (
        f"b'Authorization: Bearer {TOKEN}\\x01'",
        f"{{'Authorization': 'Bearer {TOKEN}', 'Host': 'x'}}",
        f'{{"authorization": "{TOKEN}"}}',
        f"GET /streams/c/p/scores?token={TOKEN}&x=1 HTTP/1.1",
        f"retrying with bearer {TOKEN}",
    ):
        assert TOKEN not in redact(text) and REDACTED in redact(text), text
    assert redact("call-1/p1 closed: delete") == "call-1/p1 closed: delete"


# -- 12: a quick reconnect after DELETE is told to retry ---------------------------------------------------------


async def test_a_reconnect_while_the_last_session_closes_gets_503_with_retry_after(whip_server: ServerFactory) -> None:
    flushing = asyncio.Event()
    release = asyncio.Event()
    collector = Collector()

    async def slow_flush(session: IngestSession) -> None:
        await collector(session)
        flushing.set()
        await release.wait()  # the pipeline is still scoring the last window

    server, url, _ = await whip_server(slow_flush)
    first, second, third = (RawPeer(FreezingTrack(0)) for _ in range(3))
    target = stream_url(url, participant_id="again")
    closing_before = rejected("closing")
    async with aiohttp.ClientSession() as http:
        await first.connect(http, target)
        live = await post(http, target, await second.offer())
        assert live.status == 409  # a live session: final
        assert await first.delete(http) == 200
        await asyncio.wait_for(flushing.wait(), 5)
        retry = await post(http, target, await second.offer())
        assert retry.status == 503 and retry.headers["Retry-After"] == "1", retry.text
        assert "still closing" in retry.text and rejected("closing") - closing_before == 1
        release.set()
        async with asyncio.timeout(5):
            while server.registry.sessions():  # noqa: ASYNC110 (polling server state)
                await asyncio.sleep(0.02)
        await third.connect(http, target)
    for peer in (first, second, third):
        await peer.pc.close()


# -- the offer's error says what was wrong ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "repair"),
    [
        ("m=audio x UDP/TLS/RTP/SAVPF 96", lambda sdp: re.sub(r"m=audio \d+ ", "m=audio x ", sdp, count=1)),
        ("a=candidate:1 1 udp", lambda sdp: sdp.replace("a=ice-ufrag", "a=candidate:1 1 udp\r\na=ice-ufrag", 1)),
        ("c=IN IP9 nowhere", lambda sdp: sdp.replace("c=IN IP4", "c=IN IP9 nowhere\r\nc=IN IP4", 1)),
        ("a=setup:sideways", lambda sdp: sdp.replace("a=setup:actpass", "a=setup:sideways", 1)),
        ("a=rtpmap:x opus/48000/2", lambda sdp: sdp.replace("a=rtpmap:", "a=rtpmap:x opus/48000/2\r\na=rtpmap:", 1)),
    ],
    ids=["m-line", "candidate", "connection", "setup", "rtpmap"],
)
async def test_an_unparseable_offer_is_refused_naming_its_line(broken: str, repair: Callable[[str], str]) -> None:
    peer = RawPeer(FreezingTrack(0))
    offer = await peer.offer()
    await peer.pc.close()
    bad = repair(offer)
    assert bad != offer
    number = next(i for i, line in enumerate(bad.splitlines(), 1) if line.startswith(broken))
    with pytest.raises(OfferError) as refused:
        check_offer(bad)
    message = str(refused.value)
    assert message.startswith(f"malformed SDP offer: line {number} '{broken}") and "cannot be read" in message
    assert "AssertionError" not in message


async def test_the_client_reads_which_line_was_wrong(whip_server: ServerFactory) -> None:
    _, url, _ = await whip_server()
    peer = RawPeer(FreezingTrack(0))
    offer = re.sub(r"m=audio \d+ ", "m=audio x ", await peer.offer(), count=1)
    async with aiohttp.ClientSession() as http:
        answer = await post(http, stream_url(url), offer)
    assert answer.status == 400 and "'m=audio x UDP/TLS/RTP/SAVPF" in answer.text, answer.text
    await peer.pc.close()


def test_tokens_outside_bearer_syntax_are_refused_at_start() -> None:
    async def nothing(session: IngestSession) -> None:
        return None

    with pytest.raises(ConfigError, match="ingest.tokens: a token is"):
        WhipServer(IngestSettings(tokens=[SecretStr("has space")]), nothing)
