"""Read a Kafka topic back without a consumer group: evaluation, the alert monitor's fences, the demo, tests.

A read covers every partition from its beginning (or its last `tail` records) to the end offsets seen when
the read starts; `at_least` and `quiet_s` stretch it for topics that producers are still writing to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from agent import messages
from agent.errors import BrokerError
from agent.kafka_config import common_kwargs
from agent.settings import KafkaSettings
from core.errors import ConfigError

_POLL_MS = 200
# A topic that does not exist: "error" raises ConfigError, "empty" reads nothing, "wait" waits for a producer
# to create it until the deadline.
IfMissing = Literal["error", "empty", "wait"]


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    key: str  # "" for a record without a key
    headers: dict[str, bytes]
    value: bytes

    @classmethod
    def of(cls, partition: int, record: Any) -> TopicRecord:
        """One kafka-python ConsumerRecord of `partition` (a key that is not UTF-8 is decoded with U+FFFD)."""
        key = record.key.decode(errors="replace") if record.key is not None else ""
        return cls(partition, record.offset, key, dict(record.headers), record.value or b"")

    @cached_property
    def message(self) -> dict[str, Any]:
        """The body, decoded (`agent.messages.decode`); not validated."""
        return messages.decode(self.value)


class TopicReadTimeout(BrokerError):
    """The deadline passed before the read was complete; `records` holds what was read by then."""

    def __init__(self, message: str, records: list[TopicRecord]) -> None:
        super().__init__(message, retryable=True)
        self.records = records


def read_topic(
    kafka: KafkaSettings, topic: str, *, timeout_s: float = 30.0, if_missing: IfMissing = "error",
    tail: int | None = None, at_least: int = 0, quiet_s: float = 0.0,
) -> list[TopicRecord]:
    """The records of `topic` in (partition, offset) order: from the beginning, or each partition's last
    `tail`, to the end offsets seen at the start; then on until `at_least` were read and none came for
    `quiet_s`. Raises TopicReadTimeout when `timeout_s` runs out first."""
    deadline = time.monotonic() + timeout_s
    try:
        consumer = KafkaConsumer(**common_kwargs(kafka), group_id=None, enable_auto_commit=False)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}", retryable=True) from exc
    records: list[TopicRecord] = []
    try:
        partitions = _partitions(consumer, topic, deadline if if_missing == "wait" else None)
        if not partitions:
            if if_missing == "error":
                raise ConfigError(f"Kafka topic {topic!r} does not exist or has no partitions")
            if if_missing == "wait":
                raise TopicReadTimeout(f"Kafka topic {topic!r} did not appear within {timeout_s} s", records)
            return records
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        if tail is None:
            consumer.seek_to_beginning(*tps)
        else:
            begin = consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(begin[tp], end[tp] - tail))
        last_new_s = time.monotonic()
        while not (
            all(consumer.position(tp) >= end[tp] for tp in tps)
            and len(records) >= at_least
            and time.monotonic() - last_new_s >= quiet_s
        ):
            if time.monotonic() > deadline:
                records.sort(key=lambda r: (r.partition, r.offset))
                raise TopicReadTimeout(f"could not read {topic} within {timeout_s} s ({len(records)} records "
                                       "read)", records)  # fmt: skip
            for tp, batch in consumer.poll(timeout_ms=_POLL_MS).items():
                records.extend(TopicRecord.of(tp.partition, r) for r in batch)
                last_new_s = time.monotonic()
    finally:
        consumer.close(autocommit=False)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _partitions(consumer: KafkaConsumer, topic: str, wait_until_s: float | None) -> list[int]:
    """The topic's partitions; none when it does not exist (by `wait_until_s`, when given)."""
    while not (found := consumer.partitions_for_topic(topic)):
        if wait_until_s is None or time.monotonic() > wait_until_s:
            return []
        time.sleep(0.1)
    return sorted(found)
