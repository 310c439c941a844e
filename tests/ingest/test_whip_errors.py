"""Bad input against the WHIP endpoint: each gets the right status or a clean session end, and the server
keeps serving the session that is streaming meanwhile."""

from __future__ import annotations

import asyncio
import os
import re
import socket

import aiohttp
import pytest
from aiortc.contrib.media import MediaPlayer
from whip_testing import (
    GRID_CLIP,
    SPEECH_CLIP,
    TOKEN,
    Collector,
    FreezingTrack,
    RawPeer,
    ServerFactory,
    answer_ports,
    auth,
    post,
    stream_url,
)

from agent import metrics
from agent.stream_client import stream_file
from agent.whip import WhipServer
from core.types import SAMPLE_RATE_HZ

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(f"affectstream_{name}", labels) or 0.0


async def test_bad_requests_while_another_session_streams(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server(max_sdp_bytes=4096, cors_allow_origin="https://app.example")
    good = asyncio.create_task(stream_file(GRID_CLIP, stream_url(url, participant_id="good"), TOKEN))
    try:
        await _send_bad_requests(server, url, collector)
    except BaseException:
        good.cancel()  # a failed assertion: end the good stream before the loop closes
        raise
    result = await good
    session = await collector.ended("call-1/good")
    assert session.closed == "delete"
    audio_s = sum(len(c.samples) for c in collector.audio("call-1/good")) / SAMPLE_RATE_HZ
    assert abs(audio_s - 3.0) < 0.1 and result.video_frames >= 70
    await asyncio.sleep(0.1)
    assert server.active_sessions == 0


async def _send_bad_requests(server: WhipServer, url: str, collector: Collector) -> None:
    offer = await RawPeer(FreezingTrack(0)).offer()
    video_only = await RawPeer(video_only=True).offer()
    no_ice = re.sub(r"a=ice-(ufrag|pwd):.*\r\n", "", offer)
    target = stream_url(url, participant_id="bad")
    auth_before = metric("sessions_rejected_total", reason="auth")
    bad_before = metric("sessions_rejected_total", reason="bad_offer")
    async with aiohttp.ClientSession() as http:
        while not server.registry.sessions():  # noqa: ASYNC110 (wait for the good stream's POST)
            await asyncio.sleep(0.01)
        good_location = f"{url}/{server.registry.sessions()[0].id}"

        missing = await post(http, target, offer, headers={"Authorization": ""})
        assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await post(http, target, offer, headers={"Authorization": f"Basic {TOKEN}"})).status == 401
        wrong = await post(http, target, offer, headers=auth("not-the-token"))
        assert wrong.status == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        assert (await post(http, target, offer, content_type="text/plain")).status == 415
        assert (await post(http, target, offer + "a=x-padding:" + "x" * 4096 + "\r\n")).status == 413
        garbage = await post(http, target, os.urandom(600))
        assert garbage.status == 400
        malformed = await post(http, target, "hello, this is not SDP")
        assert malformed.status == 400 and "malformed" in malformed.text
        unusable = await post(http, target, no_ice)
        assert unusable.status == 400 and "SDP" in unusable.text
        no_audio = await post(http, target, video_only)
        assert no_audio.status == 400 and no_audio.text == "offer has no audio"
        bad_id = await post(http, stream_url(url, call_id="bad id!"), offer)
        assert bad_id.status == 400 and "call_id" in bad_id.text
        no_participant = await post(http, f"{url}?call_id=c", offer)
        assert no_participant.status == 400 and "participant_id" in no_participant.text
        duplicate = await post(http, stream_url(url, participant_id="good"), offer)
        assert duplicate.status == 409
        # garbage aimed at the live session's resource
        async with http.patch(good_location, data=b"\x00\xff garbage", headers=auth()) as response:
            assert response.status == 405
        async with http.post(good_location, data=b"garbage", headers=auth()) as response:
            assert response.status == 405
        async with http.delete(f"{url}/no-such-session", headers=auth()) as response:
            assert response.status == 404
        async with http.delete(good_location) as response:
            assert response.status == 401
        async with http.options(url) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Location" in response.headers["Access-Control-Expose-Headers"]
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        assert unusable.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert len(server.registry) == 1  # no rejected offer holds a slot
        assert metric("sessions_rejected_total", reason="auth") - auth_before == 4  # 3 offers and the DELETE
        assert metric("sessions_rejected_total", reason="bad_offer") - bad_before == 9

        # identity from headers instead of the query string
        peer = RawPeer(FreezingTrack(0))
        headers = {"X-Call-Id": "call-9", "X-Participant-Id": "hdr", "X-Role": "clinician"}
        accepted = await post(http, url, await peer.offer(), headers=headers)
        assert accepted.status == 201 and accepted.headers["Content-Type"].startswith("application/sdp")
        assert accepted.headers["Location"].startswith(f"{url}/") and "a=fingerprint" in accepted.text
        async with http.delete(accepted.headers["Location"], headers=auth()) as response:
            assert response.status == 200
        await peer.pc.close()
        hdr = await collector.ended("call-9/hdr")
        assert hdr is not None and hdr.stream.role == "clinician" and hdr.closed == "delete"


async def test_too_many_sessions_gets_503_until_one_ends(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server(max_sessions=2, retry_after_s=7)
    peers = [RawPeer(FreezingTrack(0)) for _ in range(3)]
    async with aiohttp.ClientSession() as http:
        for i, peer in enumerate(peers[:2]):
            await peer.connect(http, stream_url(url, participant_id=f"p{i}"))
        capacity_before = metric("sessions_rejected_total", reason="capacity")
        full = await post(http, stream_url(url, participant_id="p2"), await peers[2].offer())
        assert full.status == 503 and full.headers["Retry-After"] == "7"
        assert metric("sessions_rejected_total", reason="capacity") - capacity_before == 1
        assert await peers[0].delete(http) == 200
        assert await peers[0].delete(http) == 404  # gone
        await collector.ended("call-1/p0")
        await peers[2].connect(http, stream_url(url, participant_id="p2"))
        assert server.active_sessions == 2
        for peer in peers:
            await peer.pc.close()


async def test_client_vanishing_mid_call_ends_the_session_cleanly(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server()
    player = MediaPlayer(str(GRID_CLIP))
    peer = RawPeer(player.audio, player.video)
    async with aiohttp.ClientSession() as http:
        await peer.connect(http, stream_url(url))
        await peer.wait_connected()
        await asyncio.sleep(1.0)
        await peer.pc.close()  # no DELETE: the peer just goes away
    session = await collector.ended("call-1/p1", timeout_s=5.0)
    assert session.closed == "peer_ended"
    audio_s = sum(len(c.samples) for c in collector.audio("call-1/p1")) / SAMPLE_RATE_HZ
    assert 0.6 < audio_s < 1.4  # what was sent before it vanished, delivered up to the end
    assert collector.frames("call-1/p1")
    await asyncio.sleep(0.1)
    assert server.active_sessions == 0


async def test_connected_peer_that_stops_sending_times_out(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server(media_timeout_s=1.0)
    peer = RawPeer(FreezingTrack(25))  # 0.5 s of audio, then silence on the wire (no RTCP BYE)
    async with aiohttp.ClientSession() as http:
        await peer.connect(http, stream_url(url))
        session = await collector.ended("call-1/p1", timeout_s=6.0)
    assert session.closed == "media_timeout"
    assert session.stats().audio_s >= 0.3
    await peer.pc.close()
    assert server.active_sessions == 0


async def test_session_whose_ice_never_completes_is_closed(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server(ice_timeout_s=1.0)
    peer = RawPeer(FreezingTrack(0))
    offer = await peer.offer()
    unreachable = re.sub(r"(a=candidate:\S+ \d \S+ \d+ \S+) \d+ typ", r"\1 9 typ", offer)  # discard port
    assert unreachable != offer
    failures_before = metric("ice_failures_total")
    async with aiohttp.ClientSession() as http:
        answer = await post(http, stream_url(url), unreachable)
        assert answer.status == 201
        session = await collector.ended("call-1/p1", timeout_s=5.0)
    assert session.closed == "ice_timeout" and collector.media["call-1/p1"] == []
    await asyncio.sleep(0.05)
    assert metric("ice_failures_total") - failures_before == 1
    await peer.pc.close()
    assert server.active_sessions == 0


async def test_junk_datagrams_after_connection_do_not_disturb_the_session(whip_server: ServerFactory) -> None:
    _, url, collector = await whip_server()
    player = MediaPlayer(str(SPEECH_CLIP))
    peer = RawPeer(player.audio)
    ended = asyncio.Event()
    player.audio.on("ended", ended.set)
    async with aiohttp.ClientSession() as http:
        answer = await peer.connect(http, stream_url(url))
        await peer.wait_connected()
        junk = [os.urandom(n) for n in (1, 20, 172, 1200)]
        junk += [
            b"\x80\x6f" + os.urandom(170),
            b"\x00\x01\x00\x00" + os.urandom(16),
            b"\x16\xfe\xfd" + os.urandom(60),
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(20):
                for port in answer_ports(answer.text):
                    for datagram in junk:
                        sock.sendto(datagram, ("127.0.0.1", port))
                await asyncio.sleep(0.02)
        await asyncio.wait_for(ended.wait(), 10)
        await asyncio.sleep(0.3)
        assert peer.pc.connectionState == "connected"
        assert await peer.delete(http) == 200
    await peer.pc.close()
    session = await collector.ended("call-1/p1")
    assert session.closed == "delete"
    audio_s = sum(len(c.samples) for c in collector.audio("call-1/p1")) / SAMPLE_RATE_HZ
    assert abs(audio_s - 1.9) < 0.12  # the jitter buffer keeps the last 80 ms without the client's tail
