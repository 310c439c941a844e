"""A live call scored by LMF: a recording streamed over real WebRTC (loopback) to an agent serving an LMF bundle
made with the CLI (`train --model lmf`, `export`); every window reaches Kafka with m and t/a/v null."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from baseline_testing import trained_bundle, write_live_pickle
from live_support import GRID_CLIPS, TOKEN, by_stream, live_settings, read_topic, whip_url
from tiny_selfmm import make_tiny_encoder

from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.stream_client import stream_file
from core.types import Score

pytestmark = pytest.mark.integration

CLIP = GRID_CLIPS / "grid_bbaf2n.mpg"  # 3 s, one GRID sentence


@pytest.fixture(scope="module")
def lmf_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lmf-live")
    encoder = make_tiny_encoder(root / "encoder")
    return trained_bundle("lmf", root, encoder, write_live_pickle(encoder, root / "data.pkl", seed=2))


async def _call(settings: Any) -> tuple[list[Score], Any]:
    scores: list[Score] = []

    async def keep(score: Score) -> None:
        scores.append(score)

    async with open_runtime(settings, score_sinks=[keep]) as runtime:
        server = AgentServer(settings, runtime)
        base = await server.start()
        try:
            result = await stream_file(CLIP, whip_url(base, "lmf-call"), TOKEN)
        finally:
            await server.close()
        assert runtime.publisher is not None and await runtime.publisher.wait_drained(30)
    return scores, result


def test_a_live_stream_is_scored_by_lmf_with_null_unimodal_heads(
    kafka_broker: Any, lmf_bundle: Path, tmp_path: Path
) -> None:
    settings = live_settings(kafka_broker.bootstrap_servers, lmf_bundle, tmp_path / "spool")
    scores, result = asyncio.run(_call(settings))
    assert result.audio_s > 2.5  # the whole clip went over WebRTC

    assert scores and all(len(s.tasks) == 1 for s in scores)
    for score in scores:
        (task,) = score.tasks
        assert task.model_id == "lmf-sentiment" and math.isfinite(task.m)
        assert (task.t, task.a, task.v) == (None, None, None)

    messages = by_stream(read_topic(settings.kafka.bootstrap_servers, settings.kafka.topics.scores))["lmf-call/p1"]
    assert [m["seq"] for m in messages] == list(range(len(scores)))
    spoken = [m for m in messages if m["quality"]["speech_ratio"] > 0]
    assert spoken, messages  # the sentence itself was scored, not only silence
    for message in messages:
        (score,) = message["scores"]
        assert score["model_id"] == "lmf-sentiment" and not message["shed"]
        assert score["t"] is None and score["a"] is None and score["v"] is None
        assert score["m"] == pytest.approx(next(s.tasks[0].m for s in scores if s.window.seq == message["seq"]))
