"""/readyz means "this process can take a new call": models loaded, accepting, a free slot; Kafka is a detail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection
from live_support import GRID_CLIPS, TOKEN, live_settings, wait_for, whip_url

from agent import metrics
from agent.broker import free_port
from agent.kafka_probe import KafkaProbe
from agent.messages import Envelope
from agent.publish import encode_record
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.spool import Spool
from agent.stream_client import stream_file

CLIP = GRID_CLIPS / "grid_bbaf2n.mpg"  # 3 s


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
        return response.status, json.loads(text) if text.startswith("{") else {}


async def _post_real_offer(url: str) -> tuple[int, dict[str, str]]:
    """A well-formed one-participant offer (it would be answered if there were room)."""
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=pc.localDescription.sdp.encode(), headers=headers) as response,
        ):
            return response.status, dict(response.headers)
    finally:
        await pc.close()


def _gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(f"affectstream_{name}")


def _spool_with_one_record(directory: Path) -> None:
    """What a previous run left behind while Kafka was down."""
    record = Envelope("scores", "earlier-call/p1", b"{}", (("schema_version", b"1"),))
    with Spool(directory, 1 << 20) as spool:
        spool.append([encode_record(record)])


async def test_ready_through_a_kafka_outage_and_unready_only_when_full(live_bundle: Path, tmp_path: Path) -> None:
    unreachable = f"127.0.0.1:{free_port()}"  # nobody listens here
    settings = live_settings(unreachable, live_bundle, tmp_path / "spool", max_sessions=1, retry_after_s=3)
    _spool_with_one_record(tmp_path / "spool")
    server = AgentServer(settings)  # listening before the models load, as `serve` does
    base = await server.start()
    try:
        status, body = await _get(f"{base}/readyz")
        assert status == 503 and body["checks"]["models"] is False
        async with open_runtime(settings) as runtime:
            server.attach(runtime)
            assert await wait_for(lambda: server.kafka_probe.reachable is not None, 10.0)
            status, body = await _get(f"{base}/readyz")
            assert status == 200, body  # Kafka down and a spool to drain: that is what the spool is for
            assert body["checks"] == {"models": True, "accepting": True, "capacity": True}
            assert body["kafka"] == {"reachable": False, "publisher_connected": False, "spool_messages": 1}
            assert body["sessions"] == {"open": 0, "max": 1}
            assert _gauge("kafka_reachable") == 0 and _gauge("spool_messages") == 1

            call = asyncio.create_task(stream_file(CLIP, whip_url(base, "fills"), TOKEN, realtime=True))
            assert await wait_for(lambda: server.whip.registry.full, 15.0)
            status, body = await _get(f"{base}/readyz")
            assert status == 503 and body["checks"]["capacity"] is False and body["checks"]["accepting"] is True
            assert body["sessions"] == {"open": 1, "max": 1}
            # an offer that raced in before the pod left the Service's endpoints
            status, headers = await _post_real_offer(whip_url(base, "racing"))
            assert status == 503 and headers["Retry-After"] == "3"

            await call
            assert await wait_for(lambda: not server.whip.registry.full, 10.0)
            assert (await _get(f"{base}/readyz"))[0] == 200
            await server.close()
    finally:
        await server.close()


async def test_the_kafka_probe_reports_a_listener_and_its_absence() -> None:
    listener = await asyncio.start_server(lambda _reader, writer: writer.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        probe = KafkaProbe(f"127.0.0.1:{free_port()}, 127.0.0.1:{port}")
        assert probe.reachable is None
        assert await probe.probe() is True and _gauge("kafka_reachable") == 1
    finally:
        listener.close()
        await listener.wait_closed()
    assert await probe.probe() is False and probe.reachable is False and _gauge("kafka_reachable") == 0
