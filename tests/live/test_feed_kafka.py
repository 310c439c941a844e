"""Two agents on one broker: a call streamed to one (`affectstream serve`, its own process) shows live on the
score feed of the other, which holds no session and no model: the feed comes from Kafka, not from memory.

Tokens are scoped, as in production: the caller holds a publisher token of its own call and participant, the
viewer a viewer token of that call; neither agent has a static token.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_support import GRID_CLIPS, by_stream, live_settings, read_topic, whip_url
from pydantic import SecretStr
from sse_client import open_feed

from agent.broker import free_port
from agent.server import AgentServer
from agent.settings import IngestSettings, Settings
from agent.stream_client import stream_file
from agent.tokens import mint_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "live-feed-secret-" + "s" * 32
CLIP = GRID_CLIPS / "grid_bbaf2n.mpg"  # 3 s, one sentence
CALL = "feed-from-kafka"


async def _ready(base: str, process: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                assert process.stdout is not None
                output = (await process.stdout.read()).decode(errors="replace")
                raise AssertionError(f"serve exited with {process.returncode}: {output[-2000:]}")
            try:
                async with http.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"serve not ready within {timeout_s} s")


async def _sessions_ended(base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{base}/metrics") as response:
                if "\naffectstream_active_sessions 0.0\n" in await response.text():
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"sessions still open after {timeout_s} s")


async def test_a_call_owned_by_one_agent_streams_live_on_another_agents_feed(
    kafka_broker: Any, live_bundle: Path, tmp_path: Path
) -> None:
    settings = live_settings(kafka_broker.bootstrap_servers, live_bundle, tmp_path / "spool")
    topics = settings.kafka.topics
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("AFFECTSTREAM_")}
    env.update(
        AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
        AFFECTSTREAM_KAFKA__TOPICS__SCORES=topics.scores,
        AFFECTSTREAM_KAFKA__TOPICS__TRANSCRIPTS=topics.transcripts,
        AFFECTSTREAM_KAFKA__TOPICS__ALERTS=topics.alerts,
        AFFECTSTREAM_SCORING__BUNDLES=json.dumps([str(live_bundle)]),
        AFFECTSTREAM_SCORING__PROVIDERS='["CPUExecutionProvider"]',
        AFFECTSTREAM_PUBLISH__SPOOL_DIR=str(tmp_path / "owner-spool"),
        AFFECTSTREAM_INGEST__TOKEN_SECRET=SECRET,
        AFFECTSTREAM_INGEST__ICE_LOOPBACK="only",
    )
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "serve", "--port", str(port), cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    owner_base = f"http://127.0.0.1:{port}"
    # the other agent: the same broker and topics, scoped tokens only, no runtime (nothing it could score)
    viewer_side = AgentServer(Settings(
        kafka=settings.kafka, ingest=IngestSettings(port=0, token_secret=SecretStr(SECRET), ice_loopback="only")
    ))  # fmt: skip
    feed_base = await viewer_side.start()
    viewer = mint_for(SECRET, "viewer", CALL, ttl_s=600)
    publisher = mint_for(SECRET, "publisher", CALL, "p1", role="patient", ttl_s=600)
    feed_url = f"{feed_base}/streams/{CALL}/p1/scores"
    try:
        await _ready(owner_base, owner, timeout_s=120.0)
        live = await open_feed(feed_url, viewer)
        assert await live.until_live() == 0  # nothing of this call yet
        result = await stream_file(CLIP, whip_url(owner_base, CALL), publisher)  # ends with its own DELETE
        assert result.audio_s > 2.5
        await _sessions_ended(owner_base, timeout_s=30.0)  # the last window scored and handed to the publisher
        on_kafka = by_stream(read_topic(kafka_broker.bootstrap_servers, topics.scores))[f"{CALL}/p1"]
        assert on_kafka and [m["seq"] for m in on_kafka] == list(range(len(on_kafka)))
        assert await live.until(len(on_kafka)) == on_kafka  # the same messages, as they were published
        late = await open_feed(f"{feed_base}/calls/{CALL}/scores", viewer)  # opened after the call: its backlog
        assert await late.until_live() == len(on_kafka) and late.events == on_kafka
        assert viewer_side.whip.active_sessions == 0 and viewer_side.runtime is None
        for feed in (live, late):
            await feed.close()
    finally:
        await viewer_side.close()
        if owner.returncode is None:
            owner.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(owner.communicate(), 60.0)
            except TimeoutError:
                owner.kill()
                await owner.wait()
