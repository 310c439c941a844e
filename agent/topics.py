"""Create the agent's topics with their partitions and replication factor (idempotent; blocking)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agent.errors import BrokerError
from agent.kafka_config import admin_kwargs
from agent.messages import Kind
from agent.settings import KafkaSettings

log = logging.getLogger(__name__)


def topic_for(kafka: KafkaSettings, kind: Kind) -> str:
    """The topic that carries messages of `kind`."""
    return {"scores": kafka.topics.scores, "transcripts": kafka.topics.transcripts, "alerts": kafka.topics.alerts}[kind]


def topic_names(kafka: KafkaSettings, *, transcripts: bool) -> list[str]:
    names = [kafka.topics.scores, kafka.topics.alerts]
    if transcripts:
        names.insert(1, kafka.topics.transcripts)
    return names


def ensure_topics(kafka: KafkaSettings, names: Iterable[str]) -> list[str]:
    """Create whichever of `names` is missing; returns those created. Raises BrokerError(retryable)."""
    wanted = list(dict.fromkeys(names))
    try:
        admin = KafkaAdminClient(**admin_kwargs(kafka))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}", retryable=True) from exc
    try:
        missing = [name for name in wanted if name not in set(admin.list_topics())]
        if not missing:
            return []
        new = [NewTopic(name, kafka.topics.partitions, kafka.topics.replication_factor) for name in missing]
        try:
            admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another client won the race; the topics are there
        log.info(
            "created topics %s (partitions=%d, replication_factor=%d)",
            ",".join(missing),
            kafka.topics.partitions,
            kafka.topics.replication_factor,
        )
        return missing
    except KafkaError as exc:
        raise BrokerError(
            f"cannot create topics on {kafka.bootstrap_servers}: {exc}", retryable=True
        ) from exc
    finally:
        admin.close()
