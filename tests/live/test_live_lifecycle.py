"""The full server's life: releasing sessions with the pipeline attached, SIGTERM twice (readiness and
draining: test_live_readiness.py, test_live_drain.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_support import (
    CREMA,
    GRID_CLIPS,
    TOKEN,
    Collected,
    by_stream,
    live_settings,
    pipeline_with,
    read_topic,
    start_serve,
    wait_for,
    whip_url,
)

from agent.errors import SpoolFullError
from agent.file_source import ReplaySource, file_media
from agent.pipeline import run_stream
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.stream_client import StreamError, stream_file
from core.types import Score, StreamId

pytestmark = pytest.mark.integration

CLIP = GRID_CLIPS / "grid_bbaf2n.mpg"  # 3 s


def rss_mb() -> float:
    """Resident memory after a collection, freed heap returned to the system (so live data counts)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
        return response.status, json.loads(text) if text.startswith("{") else {}


async def _post_offer(url: str) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http, http.post(url, data=b"v=0\r\n", headers=headers) as response:
        return response.status


async def _until_status(url: str, want: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await _get(url))[0] == want:
            return True
        await asyncio.sleep(0.2)
    return False


# -- release ------------------------------------------------------------------------------------------------

ROUNDS, PER_ROUND = 4, 3
# Measured: RSS grows by a few MB a round at first (codec and ONNX Runtime caches, glibc arenas of decoder
# threads) and then levels off. Keeping one session's media (30 RGB frames of 360x288 + 3 s of audio, ~10 MB
# through the stages) would add ~120 MB over 12 sessions.
RSS_TOLERANCE_MB = 48.0


async def test_many_sessions_through_the_pipeline_release_everything(
    kafka_broker: Any, live_bundle: Path, tmp_path: Path
) -> None:
    settings = live_settings(kafka_broker.bootstrap_servers, live_bundle, tmp_path / "spool")
    async with open_runtime(settings) as runtime:
        server = AgentServer(settings, runtime)
        base = await server.start()
        try:

            async def round_of(tag: str) -> None:
                urls = [whip_url(base, f"{tag}-{i}") for i in range(PER_ROUND)]
                await asyncio.gather(*(stream_file(CLIP, url, TOKEN, realtime=False) for url in urls))
                assert await wait_for(lambda: server.whip.active_sessions == 0, 15.0)

            for warm in range(2):  # first-use allocations (Whisper, FaceMesh, codecs) are not leaks
                await round_of(f"warm{warm}")
            await asyncio.sleep(0.5)
            tasks_before, rss_before = len(asyncio.all_tasks()), rss_mb()
            for n in range(ROUNDS):
                await round_of(f"r{n}")
            assert await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, 10.0)
            await asyncio.sleep(0.5)
            tasks_after, rss_after = len(asyncio.all_tasks()), rss_mb()
        finally:
            await server.close()
        assert runtime.publisher is not None and await runtime.publisher.wait_drained(30)
    print(f"RSS {rss_before:.1f} MB -> {rss_after:.1f} MB after {ROUNDS * PER_ROUND} sessions")
    assert tasks_after == tasks_before, [t.get_name() for t in asyncio.all_tasks()]
    assert rss_after - rss_before < RSS_TOLERANCE_MB
    live = by_stream(read_topic(kafka_broker.bootstrap_servers, settings.kafka.topics.scores))
    assert len(live) == (ROUNDS + 2) * PER_ROUND  # every session was scored and published
    assert all([m["seq"] for m in messages] == list(range(len(messages))) for messages in live.values())


# -- graceful shutdown of `affectstream serve` --------------------------------------------------------------

SIGTERM_AFTER_S = 5.0  # CREMA-D's third take ("sad") runs 3.9-5.9 s: the stream is mid-utterance


async def test_a_second_sigterm_ends_the_call_flushing_the_window_in_progress(
    kafka_broker: Any, live_bundle: Path, tmp_path: Path
) -> None:
    settings = live_settings(kafka_broker.bootstrap_servers, live_bundle, tmp_path / "spool")
    serve = await start_serve(settings, live_bundle, tmp_path)
    base = serve.base
    try:
        seen = await serve.wait_ready()
        assert seen[-1] == 200 and 503 in seen, seen  # not ready while loading, then ready
        client = asyncio.create_task(stream_file(CREMA, whip_url(base, "sigterm"), TOKEN))
        await asyncio.sleep(SIGTERM_AFTER_S)
        serve.process.send_signal(signal.SIGTERM)  # the first drains: the call would go on
        assert await _until_status(f"{base}/readyz", 503, 5.0)
        assert await _post_offer(whip_url(base, "late")) == 503
        serve.process.send_signal(signal.SIGTERM)  # the second ends it now
        with contextlib.suppress(StreamError):
            await client  # the server ended the call (the client may notice only when its file ends)
        assert await serve.exit_code(60.0) == 0, serve.output()
    finally:
        await serve.kill()
    messages = by_stream(read_topic(kafka_broker.bootstrap_servers, settings.kafka.topics.scores))["sigterm/p1"]
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    last = messages[-1]
    assert last["closed_by"] == "stream_end" and not last["shed"] and last["scores"]
    assert 3.9 < last["end_s"] < SIGTERM_AFTER_S + 1.0  # the partial "sad" take, cut at the shutdown


# -- a failing sink -----------------------------------------------------------------------------------------


async def test_a_failing_sink_loses_no_window_for_the_others(live_bundle: Path, tmp_path: Path) -> None:
    """A sink that raises (a full spool, a dead feed) is logged; the stream and the other sinks go on."""
    settings = live_settings("127.0.0.1:9", live_bundle, tmp_path / "spool")
    collected = Collected([], [])
    refused: list[int] = []

    async def failing(score: Score) -> None:
        refused.append(score.window.seq)
        raise SpoolFullError("spool full (test)")

    async with open_runtime(settings, publish=False) as runtime:
        collecting = pipeline_with(runtime.pipeline, settings.windows, collected)
        pipeline = replace(collecting, score_sinks=(failing, *collecting.score_sinks))  # the failing one first
        stream = StreamId("sink-test", "p1")
        media = file_media(ReplaySource(stream, GRID_CLIPS / "grid_brbk7n.mpg"), settings.features.vision_fps)
        summary = await run_stream(stream, media, pipeline, shed_on_overload=False)
    assert summary.windows >= 1 and summary.scored == summary.windows and summary.failed == 0
    assert refused == [s.window.seq for s in collected.scores] == list(range(summary.windows))
