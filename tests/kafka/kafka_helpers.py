"""Helpers for the Kafka integration tests: per-test topics and reading a topic back."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from agent import messages
from agent.settings import KafkaSettings, MonitorSettings, PublishSettings, TopicSettings


def kafka_settings(bootstrap_servers: str, prefix: str | None = None) -> KafkaSettings:
    """Own topic names per test, so tests sharing the session broker never see each other's messages."""
    prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
    topics = TopicSettings(scores=f"{prefix}.scores", transcripts=f"{prefix}.transcripts",
                           alerts=f"{prefix}.alerts", partitions=3)  # fmt: skip
    return KafkaSettings(bootstrap_servers=bootstrap_servers, request_timeout_ms=1000, topics=topics)


def publish_settings(spool_dir: Path, **overrides: object) -> PublishSettings:
    options: dict[str, object] = {"spool_dir": spool_dir, "delivery_timeout_s": 2.0, "retry_backoff_ms": 100}
    options.update(overrides)
    return PublishSettings(**options)  # type: ignore[arg-type]


def monitor_settings(group_id: str) -> MonitorSettings:
    # Shorter than the production 6 s: a SIGKILLed member's session must expire before the group rebalances.
    return MonitorSettings(
        group_id=group_id, poll_timeout_ms=200, session_timeout_ms=3000, heartbeat_interval_ms=500
    )


@dataclass(frozen=True)
class Received:
    partition: int
    offset: int
    key: str
    headers: dict[str, bytes]
    message: dict


def read_topic(bootstrap_servers: str, topic: str, *, at_least: int, timeout_s: float = 20.0,
               quiet_s: float = 1.0) -> list[Received]:  # fmt: skip
    """Every record of `topic` from the beginning: waits for `at_least`, then for `quiet_s` without more."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=2000)  # fmt: skip
    out: list[Received] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not (parts := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                return out
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=100)
            for tp, records in batch.items():
                for r in records:
                    out.append(Received(tp.partition, r.offset, r.key.decode(), dict(r.headers),
                                        messages.decode(r.value)))  # fmt: skip
                    last_new = time.monotonic()
            if len(out) >= at_least and time.monotonic() - last_new >= quiet_s:
                break
    finally:
        consumer.close(autocommit=False)
    return out


def first_seen_seqs(received: list[Received]) -> dict[str, list[int]]:
    """Per stream key, seqs in arrival order with duplicates dropped (what a consumer keeps)."""
    seen: dict[str, list[int]] = {}
    for r in received:
        seqs = seen.setdefault(r.key, [])
        if r.message["seq"] not in seqs:
            seqs.append(r.message["seq"])
    return seen
