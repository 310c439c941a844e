"""The score feed reads the scores topic on the real broker: its call's windows so far, then the new ones.

The serving agent has no runtime at all (it could not have scored anything itself): whatever its feed shows
came from Kafka, published by the real Publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kafka_factories import SECRET_TEXT, make_score
from kafka_helpers import kafka_settings, publish_settings, read_topic
from pydantic import SecretStr
from sse_client import open_feed

from agent.broker import EmbeddedBroker
from agent.publish import Publisher
from agent.server import AgentServer
from agent.settings import IngestSettings, KafkaSettings, Settings
from agent.tokens import mint_for
from core.types import StreamId

pytestmark = pytest.mark.integration

SECRET = "feed-test-secret-" + "x" * 32
PATIENT, CLINICIAN, OTHER = (
    StreamId("call-a", "patient"),
    StreamId("call-a", "clinician"),
    StreamId("call-b", "patient"),
)


@contextlib.asynccontextmanager
async def feed_server(kafka: KafkaSettings, backlog_records: int) -> AsyncIterator[tuple[AgentServer, str]]:
    settings = Settings(
        kafka=kafka,
        ingest=IngestSettings(port=0, token_secret=SecretStr(SECRET), feed_backlog_records=backlog_records),
    )
    server = AgentServer(settings)
    try:
        yield server, await server.start()
    finally:
        await server.close()


async def publish(publisher: Publisher, *windows: tuple[StreamId, int]) -> None:
    for stream, seq in windows:
        await publisher.publish_score(make_score(stream, seq, sentiment=seq / 10))
    assert await publisher.wait_drained(30)


def viewer(call_id: str, participant_id: str | None = None) -> str:
    return mint_for(SECRET, "viewer", call_id, participant_id, ttl_s=300)


def keys_and_seqs(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["stream"]["key"], e["seq"]) for e in events]


async def test_a_feed_opened_mid_call_shows_the_call_so_far_then_the_new_windows(
    kafka_broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.feed.HEARTBEAT_S", 0.5)  # a closed feed is noticed at its next write
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool"))
    await publisher.start()
    try:
        await publish(publisher, *[(PATIENT, s) for s in range(5)], *[(CLINICIAN, s) for s in range(3)],
                      *[(OTHER, s) for s in range(3)])  # fmt: skip
        async with feed_server(kafka, backlog_records=200) as (server, base):
            patient = await open_feed(f"{base}/streams/call-a/patient/scores", viewer("call-a"))
            whole_call = await open_feed(f"{base}/calls/call-a/scores", viewer("call-a"))
            one_participant = await open_feed(f"{base}/streams/call-a/clinician/scores", viewer("call-a", "clinician"))
            # the call so far: this participant's windows in order, nothing of another participant or call
            assert keys_and_seqs(await patient.until(5)) == [(PATIENT.key, s) for s in range(5)]
            assert await patient.until_live() == 5  # all of it the backlog
            assert sorted(keys_and_seqs(await whole_call.until(8))) == sorted(
                [(PATIENT.key, s) for s in range(5)] + [(CLINICIAN.key, s) for s in range(3)]
            )
            assert keys_and_seqs(await one_participant.until(3)) == [(CLINICIAN.key, s) for s in range(3)]
            assert server.feed.subscribers(PATIENT.key) == 2 and server.feed.subscribers(OTHER.key) == 0

            # then the new windows, as they are published
            await publish(publisher, (OTHER, 3), (PATIENT, 5), (CLINICIAN, 3), (PATIENT, 6), (PATIENT, 7))
            assert keys_and_seqs(await patient.until(8)) == [(PATIENT.key, s) for s in range(8)]
            assert [k for k in keys_and_seqs(await whole_call.until(12)) if k[0] == PATIENT.key] == [
                (PATIENT.key, s) for s in range(8)
            ]
            assert len(whole_call.events) == 12
            assert keys_and_seqs(await one_participant.until(4)) == [(CLINICIAN.key, s) for s in range(4)]

            # the feed carries the topic's own messages, and never a transcript
            on_kafka = {(r.key, r.message["seq"]): r.message for r in read_topic(
                kafka.bootstrap_servers, kafka.topics.scores, at_least=16)}  # fmt: skip
            assert all(event == on_kafka[(event["stream"]["key"], event["seq"])] for event in whole_call.events)
            assert SECRET_TEXT not in json.dumps(whole_call.events)

            for feed in (patient, whole_call, one_participant):
                await feed.close()
            async with asyncio.timeout(10):  # released once a write finds the connection gone (a heartbeat)
                while server.feed.subscribers(PATIENT.key) or server.feed.subscribers(CLINICIAN.key):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
    finally:
        await publisher.close()


async def test_the_backlog_reaches_back_only_as_far_as_it_is_set(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool"))
    await publisher.start()
    try:
        await publish(publisher, *[(PATIENT, s) for s in range(4)])
        async with feed_server(kafka, backlog_records=0) as (server, base):
            new_only = await open_feed(f"{base}/streams/call-a/patient/scores", viewer("call-a"))
            assert await new_only.until_live() == 0  # positioned at the topic's end; no backlog
            assert new_only.comments[0] == "connected"
            await publish(publisher, (PATIENT, 4))
            assert keys_and_seqs(await new_only.until(1)) == [(PATIENT.key, 4)]
            await new_only.close()
        async with feed_server(kafka, backlog_records=2) as (server, base):
            # the last 2 records of each partition: one stream lives in one partition
            recent = await open_feed(f"{base}/streams/call-a/patient/scores", viewer("call-a"))
            assert keys_and_seqs(await recent.until(2)) == [(PATIENT.key, 3), (PATIENT.key, 4)]
            await recent.close()
    finally:
        await publisher.close()


async def test_a_feed_opened_before_its_topic_exists_shows_the_first_windows(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    kafka = kafka_settings(kafka_broker.bootstrap_servers)  # topics of its own: none exists yet
    async with feed_server(kafka, backlog_records=200) as (_, base):
        early = await open_feed(f"{base}/streams/call-a/patient/scores", viewer("call-a"))
        await asyncio.sleep(1.5)  # the feed's consumer finds no topic, and looks again
        publisher = Publisher(kafka, publish_settings(tmp_path / "spool"))
        await publisher.start()  # creates the topics
        try:
            await publish(publisher, (PATIENT, 0), (OTHER, 0), (PATIENT, 1))
            assert keys_and_seqs(await early.until(2)) == [(PATIENT.key, 0), (PATIENT.key, 1)]
        finally:
            await publisher.close()
        await early.close()
