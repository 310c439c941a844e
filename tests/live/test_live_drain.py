"""Graceful drain of `affectstream serve`: SIGTERM turns the pod unready and refuses new calls, while the call
in progress goes on to its end, every window of it published; then the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_support import CREMA, TOKEN, by_stream, live_settings, read_topic, start_serve, whip_url

from agent.stream_client import stream_file

pytestmark = pytest.mark.integration

CALL_S = 12.6  # CREMA-D: six takes of one sentence, about 2 s apart
SIGTERM_AT_S = 3.0


async def _status(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_sigterm_lets_the_running_call_finish_and_publish(
    kafka_broker: Any, live_bundle: Path, tmp_path: Path
) -> None:
    settings = live_settings(kafka_broker.bootstrap_servers, live_bundle, tmp_path / "spool")
    serve = await start_serve(
        settings,
        live_bundle,
        tmp_path,
        AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S="60",
        AFFECTSTREAM_INGEST__RETRY_AFTER_S="7",
    )
    base = serve.base
    try:
        await serve.wait_ready()
        client = asyncio.create_task(stream_file(CREMA, whip_url(base, "drain"), TOKEN))
        await asyncio.sleep(SIGTERM_AT_S)
        serve.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while (await _status(f"{base}/readyz"))[0] != 503:
            assert time.monotonic() - signalled < 2.0, "still ready after SIGTERM"
            await asyncio.sleep(0.02)
        assert (await _status(f"{base}/healthz"))[0] == 200  # alive: only readiness changed
        offer = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
        status, headers = await _status(whip_url(base, "late"), "POST", data=b"v=0\r\n", headers=offer)
        assert status == 503 and headers["Retry-After"] == "7"

        await asyncio.sleep(3.0)
        assert serve.process.returncode is None  # the call still runs, so the process does
        result = await client  # the whole file was sent: the call was not cut
        assert result.audio_s > CALL_S - 0.5
        assert await serve.exit_code(30.0) == 0, serve.output()
    finally:
        await serve.kill()
    messages = by_stream(read_topic(kafka_broker.bootstrap_servers, settings.kafka.topics.scores))["drain/p1"]
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    after = [m for m in messages if m["start_s"] > SIGTERM_AT_S + 1.0]
    assert len(after) >= 3, [(m["start_s"], m["end_s"]) for m in messages]  # windows went on after SIGTERM
    assert all(not m["shed"] and m["scores"] for m in after)
    assert messages[-1]["end_s"] > CALL_S - 2.5  # the last take, up to the end of the call, was published
