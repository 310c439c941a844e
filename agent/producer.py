"""The one producer path of the agent: open an idempotent acks=all producer, send envelopes, count the acks.

What a caller does with messages the broker did not acknowledge is its own: the publisher spools them
(agent/publish.py), the alert monitor retries and commits no offset (agent/monitor.py), `affectstream
transcribe --publish` fails (agent/transcribe_file.py). kafka-python calls block.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from agent.errors import BrokerError
from agent.kafka_config import producer_kwargs
from agent.messages import Envelope
from agent.settings import KafkaSettings, PublishSettings
from agent.topics import ensure_topics, topic_for


@dataclass(frozen=True, slots=True)
class Acks:
    acked: int  # how many leading sends, in send order, the broker acknowledged
    error: BaseException | None  # why the next one was not; None: no answer before the timeout (or all acked)


def open_producer(kafka: KafkaSettings, publish: PublishSettings, topics: Iterable[str] = ()) -> KafkaProducer:
    """Create whichever of `topics` is missing, then connect; BrokerError (retryable) when Kafka is down."""
    wanted = list(topics)
    if wanted:
        ensure_topics(kafka, wanted)
    try:
        return KafkaProducer(**producer_kwargs(kafka, publish))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}", retryable=True) from exc


def send(producer: KafkaProducer, kafka: KafkaSettings, env: Envelope) -> FutureRecordMetadata:
    """Hand one envelope over, keyed by its stream (one stream, one partition: in order)."""
    return producer.send(topic_for(kafka, env.kind), key=env.key.encode(), value=env.value,
                         headers=list(env.headers))  # fmt: skip


def confirm(producer: KafkaProducer, sends: Sequence[FutureRecordMetadata], timeout_s: float) -> Acks:
    """Wait up to `timeout_s` for the broker's answers to `sends`."""
    try:
        producer.flush(timeout=timeout_s)
    except Exception as exc:  # a failed flush: whatever is not acknowledged by now is not
        return _count(sends, exc)
    return _count(sends, None)


def send_all(producer: KafkaProducer, kafka: KafkaSettings, envs: Sequence[Envelope], timeout_s: float) -> Acks:
    """Send `envs` in order and wait up to `timeout_s` for the acks."""
    sends: list[FutureRecordMetadata] = []
    try:
        for env in envs:
            sends.append(send(producer, kafka, env))
    except Exception as exc:  # a failure to hand one over: it and those after it are not acknowledged
        return _count(sends, exc)
    return confirm(producer, sends, timeout_s)


def _count(sends: Sequence[FutureRecordMetadata], error: BaseException | None) -> Acks:
    acked = next((i for i, f in enumerate(sends) if not (f.is_done and f.succeeded())), len(sends))
    failed = next((f.exception for f in sends[acked:] if f.is_done and f.exception), None)
    return Acks(acked, failed or error)
