"""The alert monitor: a consumer group on affect.scores applying agent.rules, alerting to affect.alerts.

Delivery: a poll batch is processed, its alerts are produced and acknowledged, and only then are the
batch's offsets committed. A crash can therefore repeat work but never skip it. Scores are deduplicated by
(stream key, session, seq): the publisher delivers at least once, and seq restarts at 0 in each session.
Per-session state is bounded (agent/monitor_state.py). Restart and rebalance recovery, documented in
docs/kafka.md:
1. the tail of affect.alerts (this monitor's own events) gives, per (session, rule), the last event: its
   seq, whether an episode is open, and since when: a `Fence`;
2. each newly assigned partition is re-read from `committed - rebuild_lookback_records`; records before the
   committed offset only rebuild rolling windows (their alerts were acknowledged before the commit);
3. for a (session, rule) with a fence, windows up to the fence's seq are silent; after it the state is the
   alert log's. So an alert acknowledged just before a crash is not raised again, and one never
   acknowledged is raised after the restart.
A partition this monitor keeps across a rebalance keeps its state and resumes at its committed offset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from agent import messages, metrics
from agent.errors import BrokerError, PublishError
from agent.kafka_config import consumer_kwargs
from agent.monitor_state import SessionStates
from agent.producer import open_producer, send_all
from agent.rules import AlertEvent, Fence, Observation, Rule, RuleEngine, SessionKey
from agent.settings import KafkaSettings, MonitorSettings, PublishSettings
from agent.topic_reader import read_topic
from agent.topics import ensure_topics

log = logging.getLogger(__name__)

_SEND_ATTEMPTS = 5
AlertHook = Callable[[list[AlertEvent]], None]
# starting: creating topics and the consumer; joining: waiting for the first assignment; consuming: reading
# (also through later rebalances); stopped: the loop has ended.
Phase = Literal["starting", "joining", "consuming", "stopped"]


@dataclass
class MonitorStats:
    records: int = 0
    duplicates: int = 0  # (stream key, session, seq) seen before: dropped
    invalid: int = 0  # not a valid affect.scores message: logged and skipped
    alerts: int = 0  # alert events acknowledged by the broker
    rebuilds: int = 0  # assignments handled (the first one and every rebalance)


@dataclass(frozen=True, slots=True)
class MonitorStatus:
    """What the probes report: live until the loop ends, ready once it consumes its assignment."""

    phase: Phase
    partitions: tuple[int, ...]
    sessions: int

    @property
    def live(self) -> bool:
        return self.phase != "stopped"

    @property
    def ready(self) -> bool:
        return self.phase == "consuming"


def observation(message: dict[str, Any]) -> Observation:
    """A validated affect.scores message as the rule engine's input (a shed window has no values)."""
    values = {} if message["shed"] else {
        t["task"]: {"m": t["m"], "t": t["t"], "a": t["a"], "v": t["v"]} for t in message["scores"]
    }  # fmt: skip
    return Observation(
        stream=messages.stream_of(message),
        seq=message["seq"],
        start_s=message["start_s"],
        end_s=message["end_s"],
        values=values,
        replay=message["replay"],
    )


def read_alert_fences(
    kafka: KafkaSettings, monitor_id: str, lookback_records: int, timeout_s: float = 30.0
) -> dict[tuple[SessionKey, str], Fence]:
    """The last event per (session, rule) of this monitor in the tail of the alerts topic."""
    fences: dict[tuple[SessionKey, str], Fence] = {}
    # A missing topic (a broker restarted without it) holds no events.
    tail = read_topic(kafka, kafka.topics.alerts, timeout_s=timeout_s, if_missing="empty", tail=lookback_records)
    for record in tail:  # one stream's events share a partition, read in offset order
        _apply_alert(fences, record.value, monitor_id)
    return fences


def _apply_alert(fences: dict[tuple[SessionKey, str], Fence], value: bytes, monitor_id: str) -> None:
    try:
        alert = messages.decode(value)
        messages.validate("alerts", alert)
        session = messages.stream_of(alert).session_key
    except (ValueError, PublishError):
        return  # not ours to judge; the alerts topic may hold other producers' messages
    if alert["monitor_id"] != monitor_id:
        return
    key = (session, alert["rule"])
    if key not in fences or fences[key].seq <= alert["seq"]:
        fences[key] = Fence(alert["seq"], alert["event"] == "raised", alert["episode_seq"])


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread, where blocking consumer calls are forbidden: it only flags."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.monitor.rebuild_needed = True


class Monitor:
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: MonitorSettings,
        rules: tuple[Rule, ...],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.rules = rules
        self.stats = MonitorStats()
        self.state = SessionStates(
            RuleEngine(rules), idle_s=settings.stream_idle_s, max_sessions=settings.max_streams, clock=clock
        )
        self._owned: frozenset[TopicPartition] = frozenset()
        self._silent_until: dict[TopicPartition, int] = {}
        self._producer: KafkaProducer | None = None
        self._phase: Phase = "starting"
        self.rebuild_needed = False
        # Fault-injection points for tests: called with the batch's alerts around their delivery.
        self.before_alerts_sent: AlertHook | None = None
        self.after_alerts_acked: AlertHook | None = None

    @property
    def monitor_id(self) -> str:
        return self.settings.group_id

    @property
    def engine(self) -> RuleEngine:
        return self.state.engine

    def status(self) -> MonitorStatus:
        """Safe to call from another thread (the probes)."""
        owned = self._owned
        return MonitorStatus(self._phase, tuple(sorted(tp.partition for tp in owned)), len(self.state))

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; raises BrokerError when alerts cannot be delivered."""
        self._phase = "starting"
        try:
            ensure_topics(self.kafka, [self.kafka.topics.scores, self.kafka.topics.alerts])
            consumer = KafkaConsumer(**consumer_kwargs(self.kafka, self.settings))
        except BaseException:
            self._phase = "stopped"
            raise
        consumer.subscribe([self.kafka.topics.scores], listener=_Rebalance(self))
        self._phase = "joining"
        log.info("monitor started", extra={"group_id": self.monitor_id, "rules": len(self.rules)})
        try:
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=500)
                if self.rebuild_needed:
                    self.rebuild_needed = False
                    self.rebuild(consumer, sorted(consumer.assignment()), unprocessed=batch)
                    self._phase = "consuming"
                elif batch:
                    self.handle(consumer, batch)
                self.state.expire()
        finally:
            self._phase = "stopped"
            consumer.close(autocommit=False)
            if self._producer is not None:
                self._producer.close(timeout=5)

    def rebuild(
        self,
        consumer: KafkaConsumer,
        assigned: list[TopicPartition],
        unprocessed: dict[TopicPartition, list[Any]],
    ) -> None:
        """Adopt a new assignment: partitions kept keep their state and resume at their committed offset;
        new ones get alert-log fences and a silent re-read (see top); state of the others is forgotten.

        `unprocessed` is the poll batch that arrived with the assignment: it is re-read, not processed.
        """
        kept = self._owned & set(assigned)
        new = [tp for tp in assigned if tp not in kept]
        forgotten = self.state.retain_partitions({tp.partition for tp in assigned})
        self._silent_until = {tp: offset for tp, offset in self._silent_until.items() if tp in kept}
        self._owned = frozenset(assigned)
        metrics.MONITOR_PARTITIONS.set(len(assigned))
        open_episodes = 0
        if new:
            fences = read_alert_fences(self.kafka, self.monitor_id, self.settings.alerts_lookback_records)
            self.engine.restore_fences(fences)
            open_episodes = sum(1 for f in fences.values() if f.open)
        if assigned:
            begin = consumer.beginning_offsets(assigned)
            end = consumer.end_offsets(assigned)
        first_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in assigned:
            committed = consumer.committed(tp)
            if committed is not None and committed > end[tp]:
                log.warning("partition %d: committed offset %d beyond its end %d (topic recreated?)",
                            tp.partition, committed, end[tp])  # fmt: skip
                committed = begin[tp]
            records = unprocessed.get(tp)
            if committed is None:  # a new group: where auto_offset_reset put us, before this batch
                if records:
                    consumer.seek(tp, records[0].offset)
                # Pinned now, so a rebalance before the first batch cannot move a `latest` start further on.
                first_offsets[tp] = OffsetAndMetadata(consumer.position(tp), "", -1)
            elif tp in kept:  # every handled batch was committed: resume right after it, state intact
                consumer.seek(tp, committed)
            else:
                consumer.seek(tp, max(begin[tp], committed - self.settings.rebuild_lookback_records))
                self._silent_until[tp] = committed
        if first_offsets:
            self._commit(consumer, first_offsets)
        self.stats.rebuilds += 1
        metrics.MONITOR_REBALANCES.inc()
        log.info(
            "monitor state rebuilt: %d partition(s) (%d kept, %d new), %d session state(s) of other partitions "
            "forgotten, %d open episode(s) in the alert log",
            len(assigned), len(kept), len(new), forgotten, open_episodes,
        )  # fmt: skip

    def handle(self, consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        """Process one poll batch; alerts acknowledged, then offsets committed."""
        events: list[AlertEvent] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in batch.items():
            for record in records:
                events.extend(self._process(tp, record.offset, record.value))
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        if events:
            if self.before_alerts_sent is not None:
                self.before_alerts_sent(events)
            self._send_alerts(events)
            if self.after_alerts_acked is not None:
                self.after_alerts_acked(events)
        self._commit(consumer, offsets)

    def _commit(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        try:
            consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced meanwhile. Partitions kept are re-read from their last commit (their
            # windows are then duplicates, dropped); a new owner re-reads the others behind the alert log.
            log.warning("offset commit refused: the group is rebalancing; the batch will be re-read")

    def _process(self, tp: TopicPartition, offset: int, value: bytes) -> list[AlertEvent]:
        self.stats.records += 1
        try:
            message = messages.decode(value)
            messages.validate("scores", message)
            obs = observation(message)  # ValueError: an id the schema allows but StreamId does not
        except (ValueError, PublishError) as exc:
            self.stats.invalid += 1
            metrics.count_monitor_record("invalid")
            reason = str(exc) if isinstance(exc, PublishError) else type(exc).__name__
            log.error("skipping invalid score message at %s[%d]@%d: %s", tp.topic, tp.partition, offset, reason)
            return []
        if not self.state.admit(tp.partition, obs.stream.session_key, obs.seq):
            self.stats.duplicates += 1
            metrics.count_monitor_record("duplicate")
            return []
        metrics.count_monitor_record("evaluated")
        silent = offset < self._silent_until.get(tp, 0)
        return self.engine.observe(obs, emit=not silent)

    def _send_alerts(self, events: list[AlertEvent]) -> None:
        envelopes = [messages.envelope("alerts", messages.alert_message(e, monitor_id=self.monitor_id))
                     for e in events]  # fmt: skip
        for attempt in range(1, _SEND_ATTEMPTS + 1):
            try:
                if self._producer is None:
                    # after a failed attempt the broker may have restarted without its topics
                    topics = [self.kafka.topics.alerts] if attempt > 1 else []
                    self._producer = open_producer(self.kafka, PublishSettings(), topics)
                acks = send_all(self._producer, self.kafka, envelopes, self.kafka.request_timeout_ms / 1000 * 3)
                if acks.acked == len(envelopes):
                    self.stats.alerts += len(envelopes)
                    for e in events:
                        if e.event == "raised":
                            metrics.ALERTS_RAISED.labels(rule=e.rule).inc()
                    for e in events:
                        log.info(
                            "alert %s",
                            e.event,
                            extra={
                                "rule": e.rule,
                                "stream_key": e.stream.key,
                                "session": e.stream.session_id,
                                "seq": e.seq,
                                "episode_seq": e.episode_seq,
                            },
                        )
                    return
                log.warning("alert delivery attempt %d: %d of %d acknowledged (%s)", attempt, acks.acked,
                            len(envelopes), type(acks.error).__name__ if acks.error else "timeout")  # fmt: skip
            except (KafkaError, BrokerError) as exc:
                log.warning("alert delivery attempt %d failed: %s", attempt, type(exc).__name__)
            if self._producer is not None:
                self._producer.close(timeout=0)
                self._producer = None
            time.sleep(min(5.0, 0.2 * 2**attempt))
        raise BrokerError(f"{len(events)} alert(s) not acknowledged after {_SEND_ATTEMPTS} attempts; "
                          "offsets not committed, a restart redelivers them", retryable=True)  # fmt: skip
