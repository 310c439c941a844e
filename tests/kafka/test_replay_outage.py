"""A replayed call survives a 20 s broker outage: every window reaches the scores topic once, in order.

The real pipeline (Whisper, features, ONNX scoring, publisher with its spool) replays the GRID recording
(33 s, 11 utterances) in real time, as `affectstream replay --pace realtime` does. Once the first window is
acknowledged the broker is stopped, kept down 20 s while the call goes on (the publisher spools), and started
again while the call is still live (later windows meet a running broker and a draining spool). The embedded
broker keeps nothing across a restart, so the topic is read right before the stop and again at the end; a
consumer deduplicating by (stream, seq) over both reads must see every window exactly once, in seq order.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka_helpers import first_seen_seqs, read_topic

from agent import messages
from agent.broker import EmbeddedBroker
from agent.file_source import collect_sources
from agent.replay import ReplayOptions, replay
from agent.runtime import open_runtime
from agent.settings import Settings
from agent.topic_reader import TopicRecord
from core.types import Score

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
ACKED_BEFORE_STOP = 1  # windows on the broker before it goes down (reading them back takes seconds)


def _settings(bootstrap_servers: str, bundle: Path, spool_dir: Path) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": bootstrap_servers, "request_timeout_ms": 1000,
               "topics": {"scores": "outage.scores", "transcripts": "outage.transcripts",
                          "alerts": "outage.alerts", "partitions": 3}},
        publish={"spool_dir": spool_dir, "delivery_timeout_s": 2.0, "retry_backoff_ms": 100},
        scoring={"bundles": [bundle], "providers": ["CPUExecutionProvider"]},
        windows={"mode": "utterance"},
    )  # fmt: skip


@dataclass
class _Outage:
    """Stops the broker from inside the score sinks once the first N scores are on the topic: the stream's
    analyser waits for this sink, so nothing is handed to the publisher between reading the topic and
    stopping the broker."""

    broker: EmbeddedBroker
    topic: str
    before_stop: list[TopicRecord] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    stopped_at_s: float = 0.0
    restarted_at_s: float = 0.0
    published_at_s: dict[int, float] = field(default_factory=dict)  # seq -> when the publisher took it

    async def sink(self, score: Score) -> None:
        self.published_at_s[score.window.seq] = time.monotonic()
        if self.stopped.is_set() or score.window.seq + 1 < ACKED_BEFORE_STOP:
            return
        self.before_stop.extend(await asyncio.to_thread(
            read_topic, self.broker.bootstrap_servers, self.topic, at_least=ACKED_BEFORE_STOP, quiet_s=0.3
        ))  # fmt: skip
        await asyncio.to_thread(self.broker.stop)
        self.stopped_at_s = time.monotonic()
        self.stopped.set()


async def _restart_after_outage(outage: _Outage) -> float:
    await outage.stopped.wait()
    await asyncio.sleep(OUTAGE_S)
    await asyncio.to_thread(outage.broker.start)
    outage.restarted_at_s = time.monotonic()
    return outage.restarted_at_s - outage.stopped_at_s


def _seqs_in_offset_order(received: list[TopicRecord]) -> dict[str, list[int]]:
    by_key: dict[str, list[TopicRecord]] = {}
    for r in received:
        by_key.setdefault(r.key, []).append(r)
    return {k: [r.message["seq"] for r in sorted(rs, key=lambda r: r.offset)] for k, rs in by_key.items()}


async def test_broker_down_20_s_mid_replay_every_window_once_in_order(
    fresh_kafka_broker: EmbeddedBroker, sentiment_bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    broker = fresh_kafka_broker
    settings = _settings(broker.bootstrap_servers, sentiment_bundle, tmp_path / "spool")
    source = collect_sources([shared_data / "av" / "derived" / "grid_11clips_concat.mp4"])[0]
    outage = _Outage(broker, settings.kafka.topics.scores)
    # given after the publisher's sink, the outage's sees each score once it was handed over
    async with open_runtime(settings, publish=True, replay=True, score_sinks=[outage.sink]) as runtime:
        publisher = runtime.publisher
        assert publisher is not None
        restart = asyncio.create_task(_restart_after_outage(outage))
        summary = await replay([source], runtime.pipeline, settings,
                               ReplayOptions(pace="realtime", progress=False))  # fmt: skip
        replay_ended_s = time.monotonic()
        outage_s = await asyncio.wait_for(restart, OUTAGE_S + 30)
        assert await publisher.wait_drained(60), f"spool still holds {publisher.spool_pending}"
        stats = publisher.stats

    result = summary.files[0]
    assert summary.ok and result.error is None, result.error
    assert result.windows >= 8 and result.scored == result.windows  # replay never sheds
    assert outage.stopped.is_set() and outage.stopped_at_s < replay_ended_s  # stopped mid-call
    assert outage_s >= OUTAGE_S
    # started again while the call was still live: later windows were published after the restart
    assert outage.restarted_at_s < replay_ended_s
    assert any(t > outage.restarted_at_s for t in outage.published_at_s.values())
    assert stats.acked >= ACKED_BEFORE_STOP and stats.spooled > 0 and stats.drained >= stats.spooled
    assert stats.spool_full == 0
    before = outage.before_stop
    missing = result.windows - len(first_seen_seqs(before).get(source.stream.key, []))
    after = await asyncio.to_thread(read_topic, broker.bootstrap_servers, settings.kafka.topics.scores,
                                    at_least=missing, timeout_s=30)  # fmt: skip

    for r in before + after:
        messages.validate("scores", r.message)
        assert r.key == source.stream.key == r.message["stream"]["key"]
        assert r.message["replay"] is True and r.message["shed"] is False
    for read in (before, after):  # each read holds the stream's messages in seq order
        for seqs in _seqs_in_offset_order(read).values():
            assert seqs == sorted(seqs)
    assert [r.message["seq"] for r in before] == list(range(ACKED_BEFORE_STOP))
    assert first_seen_seqs(before + after) == {source.stream.key: list(range(result.windows))}
