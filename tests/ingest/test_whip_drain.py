"""Draining: no new session, while the running calls go on until they end, the drain timeout, or a cut short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from whip_testing import RawPeer, ServerFactory, ToneTrack, post, stream_url

from agent import metrics

KEY = "call-1/p1"
LONG_CALL_FRAMES = 1500  # 30 s of tone: longer than any of these tests


def _rejected(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("affectstream_sessions_rejected_total", {"reason": reason}) or 0.0


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _live_call(http: aiohttp.ClientSession, url: str) -> RawPeer:
    peer = RawPeer(ToneTrack(LONG_CALL_FRAMES))
    await peer.connect(http, stream_url(url))
    await peer.wait_connected()
    return peer


async def test_a_running_call_goes_on_while_new_offers_are_refused(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server(retry_after_s=4)
    async with aiohttp.ClientSession() as http:
        peer = await _live_call(http, url)
        await _until(lambda: collector.audio_s.get(KEY, 0.0) > 0.2)
        draining = asyncio.create_task(server.drain(60.0))
        await asyncio.sleep(0)
        assert not server.accepting

        refused_before = _rejected("draining")
        late = RawPeer(ToneTrack(50))
        refused = await post(http, stream_url(url, participant_id="late"), await late.offer())
        assert refused.status == 503 and refused.headers["Retry-After"] == "4"
        assert _rejected("draining") - refused_before == 1
        await late.pc.close()

        heard = collector.audio_s[KEY]
        await _until(lambda: collector.audio_s[KEY] > heard + 0.5)  # media still flows and is delivered
        assert peer.location is not None and not draining.done()
        assert server.registry.get(peer.location.rpartition("/")[2]) is not None

        assert await peer.delete(http) == 200  # the call ends the usual way
        assert await asyncio.wait_for(draining, 10.0) == 0
        assert collector.closed[KEY] == "delete" and server.active_sessions == 0
    await peer.pc.close()


async def test_the_drain_timeout_leaves_the_rest_to_close(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server()
    async with aiohttp.ClientSession() as http:
        peer = await _live_call(http, url)
        await _until(lambda: collector.audio_s.get(KEY, 0.0) > 0.2)
        assert await server.drain(0.5) == 1
        session = collector.sessions[KEY]
        assert session.closed is None  # draining ends nothing by itself
        await server.close()
        assert collector.closed[KEY] == "shutdown"  # the handler saw its media end
        assert await collector.ended(KEY) is session
    await peer.pc.close()


async def test_a_drain_cut_short_returns_at_once(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server()
    async with aiohttp.ClientSession() as http:
        peer = await _live_call(http, url)
        cut_short = asyncio.Event()
        draining = asyncio.create_task(server.drain(60.0, cut_short))
        await asyncio.sleep(0.2)
        assert not draining.done()
        cut_short.set()
        assert await asyncio.wait_for(draining, 5.0) == 1
        await server.close()
        assert collector.closed[KEY] == "shutdown"
    await peer.pc.close()


async def test_an_idle_server_drains_at_once(whip_server: ServerFactory) -> None:
    server, _, _ = await whip_server()
    assert await asyncio.wait_for(server.drain(60.0), 5.0) == 0
    assert not server.accepting
