"""The monitor as a service against the real broker: sessions across a reconnect, where a new group starts,
its probes and metrics, and what a real rebalance (a second group member joining) keeps."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from kafka import KafkaConsumer
from kafka_factories import make_score
from kafka_helpers import kafka_settings, monitor_settings, read_topic
from prometheus_client.parser import text_string_to_metric_families

from agent import messages
from agent.kafka_config import consumer_kwargs
from agent.monitor import Monitor
from agent.monitor_http import MonitorHttp
from agent.producer import open_producer, send_all
from agent.rules import Rule
from agent.settings import KafkaSettings, PublishSettings
from agent.topic_reader import TopicRecord
from core.errors import ConfigError
from core.types import StreamId

pytestmark = pytest.mark.integration
RULES = (Rule(name="low_sentiment", kind="mean_below", task="sentiment", windows=3, threshold=-1.0,
              clear_threshold=-0.5, persist=2),)  # fmt: skip
LOW = [-2.0] * 5  # raises at seq 3
SESSION_1 = StreamId("call-r", "patient", "patient", session_id="a1b2c3")
SESSION_2 = StreamId("call-r", "patient", "patient", session_id="d4e5f6")  # the same participant reconnected


def _publish(kafka: KafkaSettings, windows: list[tuple[StreamId, int, float]]) -> None:
    """One window per request, each acknowledged before the next: tansu counts a batch of several records as
    one offset in a partition's end offset, which would put `latest` and committed offsets out of step."""
    producer = open_producer(kafka, PublishSettings(), [kafka.topics.scores, kafka.topics.alerts])
    try:
        for stream, seq, value in windows:
            message = messages.score_message(make_score(stream, seq, sentiment=value), replay=False)
            assert send_all(producer, kafka, [messages.envelope("scores", message)], 10.0).acked == 1
    finally:
        producer.close(timeout=5)


def _session(stream: StreamId, values: list[float], start: int = 0) -> list[tuple[StreamId, int, float]]:
    return [(stream, seq, value) for seq, value in enumerate(values, start)]


def _events(alerts: list[TopicRecord]) -> list[tuple[str, str, str, int, int]]:
    return [(a.key, a.message["session"], a.message["event"], a.message["episode_seq"], a.message["seq"])
            for a in alerts]  # fmt: skip


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def _running(monitor: Monitor) -> Iterator[None]:
    """`monitor.run` in a thread until the block ends; its error, if any, fails the test."""
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            monitor.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="monitor", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive() and not errors, errors


async def test_a_reconnected_session_is_judged_again_while_a_redelivery_is_dropped(kafka_broker) -> None:
    """The issue's demonstration: session 1's windows raise an alert; the same windows (same seqs) from the
    participant's next session raise again, for that session; a redelivered window of session 1 is dropped
    (counted, it would clear session 1's episode)."""
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    redelivered = [(SESSION_1, 2, 3.0), (SESSION_1, 3, 3.0)]
    await asyncio.to_thread(_publish, kafka, _session(SESSION_1, LOW) + redelivered + _session(SESSION_2, LOW))
    monitor = Monitor(kafka, monitor_settings(f"mon-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest"), RULES)
    with _running(monitor):
        alerts = await asyncio.to_thread(read_topic, kafka_broker.bootstrap_servers, kafka.topics.alerts,
                                         at_least=2, timeout_s=30.0, quiet_s=1.5)  # fmt: skip
    assert _events(alerts) == [
        ("call-r/patient", "a1b2c3", "raised", 3, 3),
        ("call-r/patient", "d4e5f6", "raised", 3, 3),
    ]
    assert len({a.message["alert_id"] for a in alerts}) == 2
    assert (monitor.stats.records, monitor.stats.duplicates) == (12, 2)


async def test_a_new_group_starts_at_latest_and_reports_through_its_probes(kafka_broker) -> None:
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    history = StreamId("call-h", "patient", session_id="old")
    await asyncio.to_thread(_publish, kafka, _session(history, LOW))  # would alert if read
    monitor = Monitor(kafka, monitor_settings(f"mon-{uuid.uuid4().hex[:6]}"), RULES)  # the default: latest
    http = MonitorHttp(monitor, "127.0.0.1", 0)
    url = await http.start()
    try:
        async with aiohttp.ClientSession() as client:

            async def get(path: str) -> tuple[int, str]:
                async with client.get(url + path) as response:
                    return response.status, await response.text()

            assert (await get("/healthz"))[0] == 200
            status, body = await get("/readyz")
            assert status == 503 and '"phase": "starting"' in body
            with _running(monitor):
                await asyncio.to_thread(_wait_for, lambda: monitor.status().ready, "the monitor to be ready")
                status, body = await get("/readyz")
                assert status == 200 and '"partitions": [0, 1, 2]' in body
                await asyncio.to_thread(_publish, kafka, _session(SESSION_1, LOW) + [(SESSION_1, 4, -2.0)])
                alerts = await asyncio.to_thread(read_topic, kafka_broker.bootstrap_servers, kafka.topics.alerts,
                                                 at_least=1, timeout_s=30.0, quiet_s=1.0)  # fmt: skip
                await asyncio.to_thread(_wait_for, lambda: monitor.stats.records == 6, "the last window")
                status, text = await get("/metrics")
            assert (await get("/healthz"))[0] == 503  # the loop ended
    finally:
        await http.close()
    assert _events(alerts) == [("call-r/patient", "a1b2c3", "raised", 3, 3)]  # nothing from the history
    assert (monitor.stats.records, monitor.stats.duplicates) == (6, 1)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    assert status == 200
    assert samples[("affectstream_monitor_records_total", (("outcome", "duplicate"),))] >= 1
    assert samples[("affectstream_monitor_records_total", (("outcome", "evaluated"),))] >= 5
    assert samples[("affectstream_monitor_partitions", ())] == 3
    assert samples[("affectstream_monitor_sessions", ())] == 1
    assert samples[("affectstream_alerts_raised_total", (("rule", "low_sentiment"),))] >= 1


async def test_a_rebalance_keeps_the_state_of_the_partitions_still_owned(kafka_broker) -> None:
    """A second member joins the group: the monitor keeps (without re-reading) the sessions of the partitions
    it still owns and forgets the others'."""
    kafka = kafka_settings(kafka_broker.bootstrap_servers)
    streams = [StreamId(f"call-{i}", "patient", session_id="s") for i in range(8)]
    await asyncio.to_thread(_publish, kafka, [w for s in streams for w in _session(s, LOW)])
    scores = await asyncio.to_thread(read_topic, kafka_broker.bootstrap_servers, kafka.topics.scores, at_least=40)
    partition_of = {r.key: r.partition for r in scores}
    assert len(set(partition_of.values())) == 3, "the streams should cover every partition"
    group = f"mon-{uuid.uuid4().hex[:6]}"
    monitor = Monitor(kafka, monitor_settings(group, auto_offset_reset="earliest"), RULES)
    stop_other = threading.Event()

    def other_member() -> None:
        consumer = KafkaConsumer(**consumer_kwargs(kafka, monitor_settings(group)))
        consumer.subscribe([kafka.topics.scores])
        while not stop_other.is_set():
            consumer.poll(timeout_ms=200)
        consumer.close(autocommit=False)

    with _running(monitor):
        await asyncio.to_thread(_wait_for, lambda: monitor.stats.records == 40, "every window")
        await asyncio.to_thread(_wait_for, lambda: monitor.stats.alerts == 8, "every alert acknowledged")
        other = threading.Thread(target=other_member, name="other-member", daemon=True)
        other.start()
        try:
            await asyncio.to_thread(_wait_for, lambda: monitor.stats.rebuilds >= 2 and monitor.status().ready,
                                    "the rebalance")  # fmt: skip
            owned = set(monitor.status().partitions)
            assert owned and owned < {0, 1, 2}
            kept = [s for s in streams if partition_of[s.key] in owned]
            lost = [s for s in streams if partition_of[s.key] not in owned]
            assert monitor.stats.records == 40  # nothing re-read: the kept state was not rebuilt
            assert all(s.session_key in monitor.state for s in kept)
            assert not any(s.session_key in monitor.state for s in lost)
            assert all(monitor.engine.is_open(s.session_key, "low_sentiment") for s in kept)
            # The kept state goes on: a redelivery is a duplicate, and two high windows clear the episode.
            stream = kept[0]
            await asyncio.to_thread(_publish, kafka, [(stream, 4, -2.0), (stream, 5, 3.0), (stream, 6, 3.0)])
            await asyncio.to_thread(_wait_for, lambda: monitor.stats.alerts == 9, "the clear")
            assert monitor.stats.duplicates == 1 and not monitor.engine.is_open(stream.session_key, "low_sentiment")
        finally:
            stop_other.set()
            other.join(timeout=30)


async def test_a_port_in_use_is_refused_in_one_line() -> None:
    monitor = Monitor(kafka_settings("127.0.0.1:1"), monitor_settings("unused"), RULES)  # never run
    holder = MonitorHttp(monitor, "127.0.0.1", 0)
    port = int((await holder.start()).rsplit(":", 1)[1])
    try:
        with pytest.raises(ConfigError, match=rf"monitor cannot listen on 127\.0\.0\.1:{port} \(monitor\.host/port\)"):
            await MonitorHttp(monitor, "127.0.0.1", port).start()
    finally:
        await holder.close()
