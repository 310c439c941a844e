"""The publisher against a real broker: contract on the wire, transcripts opt-in, outages, crashes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka_factories import SECRET_TEXT, make_score
from kafka_helpers import first_seen_seqs, kafka_settings, publish_settings, read_topic

from agent import messages
from agent.broker import free_port
from agent.errors import SpoolFullError
from agent.publish import Publisher
from agent.topic_reader import TopicReadTimeout
from core.types import StreamId

pytestmark = pytest.mark.integration
STREAMS = [StreamId("call-1", "patient", "patient"), StreamId("call-1", "clinician", "clinician"),
           StreamId("call-2", "patient", "patient")]  # fmt: skip
CHILD = Path(__file__).with_name("publisher_child.py")


def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything the agent logs, at DEBUG; kafka-python as the CLI configures it (its DEBUG dumps bytes)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="kafka")


def _check_wire(received: list, kafka_topic_kind: messages.Kind) -> None:
    for r in received:
        messages.validate(kafka_topic_kind, r.message)
        assert r.key == r.message["stream"]["key"]
        assert r.headers["stream_key"].decode() == r.key
        assert int(r.headers["seq"]) == r.message["seq"]
        assert r.headers["session"].decode() == r.message["session"]
        assert r.headers["schema_version"] == str(messages.SCHEMA_VERSIONS[kafka_topic_kind]).encode() == b"2"


async def test_scores_on_the_wire_and_transcripts_off_by_default(kafka_broker, tmp_path: Path, caplog) -> None:
    _capture_logs(caplog)
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool"))
    await publisher.start()
    results = []
    for seq in range(10):
        for stream in STREAMS:
            score = make_score(stream, seq, sentiment=seq / 10 - 0.5)
            results.append(await publisher.publish_score(score, replay=seq % 2 == 1))
            assert await publisher.publish_transcript(score.features.transcript) is None
    await publisher.close()
    assert set(results) == {"acked"}
    received = await asyncio.to_thread(read_topic, kafka.bootstrap_servers, kafka.topics.scores, at_least=30)
    assert len(received) == 30
    _check_wire(received, "scores")
    assert {r.headers["replay"] for r in received if r.message["seq"] % 2} == {b"1"}
    assert {r.headers["model_id"] for r in received} == {b"selfmm-mosi"}
    assert first_seen_seqs(received) == {s.key: list(range(10)) for s in STREAMS}
    assert len({r.partition for r in received if r.key == STREAMS[0].key}) == 1  # a stream stays in one partition
    with pytest.raises(TopicReadTimeout) as nothing:
        await asyncio.to_thread(read_topic, kafka.bootstrap_servers, kafka.topics.transcripts, at_least=1,
                                timeout_s=2)  # fmt: skip
    assert nothing.value.records == []
    words = SECRET_TEXT.split()
    assert not any(w in record.getMessage() for record in caplog.records for w in words)


async def test_transcripts_only_on_their_topic_when_enabled(kafka_broker, tmp_path: Path, caplog) -> None:
    _capture_logs(caplog)
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool", transcripts_enabled=True))
    await publisher.start()
    for seq in range(3):
        score = make_score(STREAMS[0], seq)
        assert await publisher.publish_transcript(score.features.transcript) == "acked"
        assert await publisher.publish_score(score) == "acked"
    await publisher.close()
    transcripts = await asyncio.to_thread(read_topic, kafka.bootstrap_servers, kafka.topics.transcripts,
                                          at_least=3)  # fmt: skip
    _check_wire(transcripts, "transcripts")
    assert [t.message["text"] for t in transcripts] == [SECRET_TEXT] * 3
    scores = await asyncio.to_thread(read_topic, kafka.bootstrap_servers, kafka.topics.scores, at_least=3)
    assert all(b"zebra" not in str(s.message).encode() for s in scores)
    assert not any("zebra" in record.getMessage() for record in caplog.records)


async def test_broker_down_20_s_mid_stream_loses_and_reorders_nothing(fresh_kafka_broker, tmp_path: Path) -> None:
    """(a) Stop the broker for 20 s mid-call; every (stream, seq) arrives once after dedup, in order."""
    broker = fresh_kafka_broker
    kafka = kafka_settings(broker.bootstrap_servers)
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool"))
    await publisher.start()
    published: dict[str, list[int]] = {s.key: [] for s in STREAMS}
    deliveries: list[str] = []
    before_stop: list = []
    stopped, restarted_done = asyncio.Event(), asyncio.Event()

    async def call() -> None:
        seq = 0
        while not restarted_done.is_set():
            for stream in STREAMS:
                deliveries.append(await publisher.publish_score(make_score(stream, seq, sentiment=0.1)))
                published[stream.key].append(seq)
            if seq == 20:  # mid-call: read what the broker holds (it forgets it on restart), then stop it
                before_stop.extend(
                    await asyncio.to_thread(
                        read_topic, kafka.bootstrap_servers, kafka.topics.scores, at_least=63, quiet_s=0.3
                    )
                )
                await asyncio.to_thread(broker.stop)
                stopped.set()
            seq += 1
            await asyncio.sleep(0.05)

    caller = asyncio.create_task(call())
    await asyncio.wait_for(stopped.wait(), 60)
    outage_started = time.monotonic()
    await asyncio.sleep(20.0)
    await asyncio.to_thread(broker.start)
    outage_s = time.monotonic() - outage_started
    await asyncio.sleep(3.0)
    restarted_done.set()
    await caller
    assert await publisher.wait_drained(60), f"spool still holds {publisher.spool_pending}"
    stats = publisher.stats
    await publisher.close()

    total = sum(len(v) for v in published.values())
    after = await asyncio.to_thread(read_topic, kafka.bootstrap_servers, kafka.topics.scores,
                                    at_least=total - len(before_stop), timeout_s=30)  # fmt: skip
    assert outage_s >= 20.0
    assert len(before_stop) == 63 and deliveries[:63] == ["acked"] * 63
    assert "spooled" in deliveries and stats.drained >= deliveries.count("spooled")
    _check_wire(before_stop + after, "scores")
    assert first_seen_seqs(before_stop + after) == published  # all there, once, in order per stream
    assert all(len(v) > 100 for v in published.values())


def _spawn_child(bootstrap: str, prefix: str, spool: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), bootstrap, prefix, str(spool), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip


def test_sigkill_while_broker_down_then_restart_drains_everything(fresh_kafka_broker, tmp_path: Path) -> None:
    """(b) The agent dies (SIGKILL) with the broker down; the next agent drains its spool first."""
    broker = fresh_kafka_broker
    broker.stop()
    prefix, spool = "sigkill", tmp_path / "spool"
    child = _spawn_child(broker.bootstrap_servers, prefix, spool, 100_000)
    spooled: list[tuple[str, int]] = []
    assert child.stdout is not None
    for line in child.stdout:
        key, seq, delivery = line.split()
        assert delivery == "spooled"
        spooled.append((key, int(seq)))
        if len(spooled) >= 150:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    for line in child.stdout:  # reported before the kill but still in the pipe: acknowledged too
        key, seq, delivery = line.split()
        assert delivery == "spooled"
        spooled.append((key, int(seq)))
    broker.start()
    restarted = _spawn_child(broker.bootstrap_servers, prefix, spool, 0)  # drains, publishes nothing new
    out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err[-2000:]
    assert "drained" in out
    kafka = kafka_settings(broker.bootstrap_servers, prefix)
    received = read_topic(kafka.bootstrap_servers, kafka.topics.scores, at_least=len(spooled), timeout_s=30)
    _check_wire(received, "scores")
    seen = first_seen_seqs(received)
    for key in {k for k, _ in spooled}:
        acknowledged = [seq for k, seq in spooled if k == key]
        # nothing the killed agent reported as spooled is lost; the order holds; at most one more (its
        # fsync may have finished before the kill interrupted the report)
        assert seen[key][: len(acknowledged)] == acknowledged
        assert seen[key] == list(range(len(seen[key]))) and len(seen[key]) <= len(acknowledged) + 1


async def test_a_full_spool_is_explicit_counted_and_logged(tmp_path: Path, caplog) -> None:
    _capture_logs(caplog)
    kafka = kafka_settings(f"127.0.0.1:{free_port()}")  # nothing listens there
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool", spool_max_bytes=4096))
    await publisher.start()
    stream, deliveries = STREAMS[0], []
    with pytest.raises(SpoolFullError, match="full"):
        for seq in range(100):
            deliveries.append(await publisher.publish_score(make_score(stream, seq)))
    assert deliveries and set(deliveries) == {"spooled"}
    assert publisher.stats.spool_full == 1 and publisher.spool_pending == len(deliveries)
    assert any("spool full" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    await publisher.close()
