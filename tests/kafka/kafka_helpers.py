"""Helpers for the Kafka integration tests: per-test topics, reading a topic back, freezing the broker."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

from agent import topic_reader
from agent.broker import EmbeddedBroker
from agent.settings import KafkaSettings, MonitorSettings, PublishSettings, TopicSettings
from agent.topic_reader import TopicRecord


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


def read_topic(bootstrap_servers: str, topic: str, *, at_least: int, timeout_s: float = 20.0,
               quiet_s: float = 1.0) -> list[TopicRecord]:  # fmt: skip
    """Every record of `topic` from the beginning, once `at_least` arrived and none more for `quiet_s`
    (producers may still be at work; the topic may not exist yet). TopicReadTimeout says what came."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    return topic_reader.read_topic(kafka, topic, timeout_s=timeout_s, if_missing="wait", at_least=at_least,
                                   quiet_s=quiet_s)  # fmt: skip


def first_seen_seqs(received: list[TopicRecord]) -> dict[str, list[int]]:
    """Per stream key, seqs in arrival order with duplicates dropped (what a consumer keeps)."""
    seen: dict[str, list[int]] = {}
    for r in received:
        seqs = seen.setdefault(r.key, [])
        if r.message["seq"] not in seqs:
            seqs.append(r.message["seq"])
    return seen


@contextlib.contextmanager
def frozen(broker: EmbeddedBroker) -> Iterator[None]:
    """The broker process stopped (SIGSTOP) and continued on exit: it keeps its sockets and its data but
    answers nothing, as a hung broker does."""
    pid = broker.pid
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
