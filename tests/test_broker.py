from __future__ import annotations

import subprocess
import sys
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from agent.broker import EmbeddedBroker, answers_kafka, free_port
from agent.errors import BrokerError

pytestmark = pytest.mark.integration


def test_produce_and_consume_with_a_committed_consumer_group(kafka_broker: EmbeddedBroker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    admin.create_topics([NewTopic("t.roundtrip", num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for i in range(10):
        producer.send("t.roundtrip", key=b"call/a" if i % 2 else b"call/b", value=str(i).encode())
    producer.flush()
    producer.close()

    def consume(max_records: int) -> list[bytes]:
        consumer = KafkaConsumer(
            "t.roundtrip",
            bootstrap_servers=kafka_broker.bootstrap_servers,
            group_id="g.roundtrip",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < max_records and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=max_records - len(values)).values():
                values.extend(record.value for record in records)
        consumer.commit()
        consumer.close()
        return values

    first = consume(6)
    rest = consume(4)
    assert len(first) == 6 and len(rest) == 4
    assert sorted(first + rest, key=int) == [str(i).encode() for i in range(10)]


def test_answers_kafka_only_while_running() -> None:
    broker = EmbeddedBroker("127.0.0.1", free_port())
    assert not answers_kafka(broker.host, broker.port, timeout_s=0.2)
    with broker:
        assert answers_kafka(broker.host, broker.port)
    assert not answers_kafka(broker.host, broker.port, timeout_s=0.2)


def test_second_broker_on_a_busy_port_is_refused(kafka_broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match="already answers"):
        EmbeddedBroker(kafka_broker.host, kafka_broker.port).start()


def test_restart_loses_topics(fresh_kafka_broker: EmbeddedBroker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=fresh_kafka_broker.bootstrap_servers)
    admin.create_topics([NewTopic("t.volatile", num_partitions=1, replication_factor=1)])
    assert "t.volatile" in admin.list_topics()
    admin.close()
    fresh_kafka_broker.stop()
    fresh_kafka_broker.start()
    admin = KafkaAdminClient(bootstrap_servers=fresh_kafka_broker.bootstrap_servers)
    assert "t.volatile" not in admin.list_topics()
    admin.close()


def test_broker_command_starts_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        assert answers_kafka("127.0.0.1", port)
        process.terminate()
        assert process.wait(timeout=15) == 0
        assert not answers_kafka("127.0.0.1", port, timeout_s=0.2)
    finally:
        if process.poll() is None:
            process.kill()
