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


# The test broker's group timings, not production values (Kafka's 45 s / 3 s are the defaults): tansu lets a
# member join after about half the session timeout, and a SIGKILLed member's session must expire before the
# group rebalances.
TEST_GROUP_TIMINGS: dict[str, object] = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500}


def monitor_settings(group_id: str, **overrides: object) -> MonitorSettings:
    """The test broker's timings; probes on a free loopback port."""
    options: dict[str, object] = {"group_id": group_id, "poll_timeout_ms": 200, "host": "127.0.0.1", "port": 0,
                                  **TEST_GROUP_TIMINGS}  # fmt: skip
    options.update(overrides)
    return MonitorSettings(**options)  # type: ignore[arg-type]


def monitor_env(bootstrap: str, prefix: str, group: str) -> dict[str, str]:
    """The environment of a monitor process (the CLI) on this test's topics, with the same test settings;
    `earliest`: the tests publish before the monitor joins."""
    env = {
        "AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "AFFECTSTREAM_KAFKA__REQUEST_TIMEOUT_MS": "1000",
        "AFFECTSTREAM_KAFKA__TOPICS__SCORES": f"{prefix}.scores",
        "AFFECTSTREAM_KAFKA__TOPICS__TRANSCRIPTS": f"{prefix}.transcripts",
        "AFFECTSTREAM_KAFKA__TOPICS__ALERTS": f"{prefix}.alerts",
        "AFFECTSTREAM_MONITOR__GROUP_ID": group,
        "AFFECTSTREAM_MONITOR__POLL_TIMEOUT_MS": "200",
        "AFFECTSTREAM_MONITOR__AUTO_OFFSET_RESET": "earliest",
        "AFFECTSTREAM_MONITOR__HOST": "127.0.0.1",
        "AFFECTSTREAM_MONITOR__PORT": "0",
    }
    env.update({f"AFFECTSTREAM_MONITOR__{name.upper()}": str(value) for name, value in TEST_GROUP_TIMINGS.items()})
    return env


def read_topic(bootstrap_servers: str, topic: str, *, at_least: int, timeout_s: float = 20.0,
               quiet_s: float = 1.0) -> list[TopicRecord]:  # fmt: skip
    """Every record of `topic` from the beginning, once `at_least` arrived and none more for `quiet_s`
    (producers may still be at work; the topic may not exist yet). TopicReadTimeout says what came."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    return topic_reader.read_topic(kafka, topic, timeout_s=timeout_s, if_missing="wait", at_least=at_least,
                                   quiet_s=quiet_s)  # fmt: skip


def first_seen_seqs(received: list[TopicRecord]) -> dict[str, list[int]]:
    """Per stream key, seqs in arrival order with duplicates by (key, session, seq) dropped (what a consumer
    keeps)."""
    seen: dict[str, list[int]] = {}
    kept: set[tuple[str, str, int]] = set()
    for r in received:
        identity = (r.key, r.message.get("session", "0"), r.message["seq"])
        if identity not in kept:
            kept.add(identity)
            seen.setdefault(r.key, []).append(r.message["seq"])
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
