"""The monitor's per-session state: deduplication by (key, session, seq), idle expiry, the size bound, and
what a rebalance keeps (unit level, with an injected clock)."""

from __future__ import annotations

import json

import pytest
from kafka.structs import TopicPartition
from kafka_factories import make_score

from agent import messages, metrics
from agent.monitor import Monitor
from agent.monitor_state import SessionStates
from agent.rules import Observation, Rule, RuleEngine
from agent.settings import KafkaSettings, MonitorSettings
from core.types import StreamId

LOW = Rule(name="low", kind="mean_below", task="sentiment", windows=2, threshold=-1.0)
FIRST = StreamId("call-s", "patient", session_id="first")
SECOND = StreamId("call-s", "patient", session_id="second")


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _states(clock: Clock, *, idle_s: float = 60.0, max_sessions: int = 100) -> SessionStates:
    return SessionStates(RuleEngine((LOW,)), idle_s=idle_s, max_sessions=max_sessions, clock=clock)


def _feed(states: SessionStates, partition: int, stream: StreamId, seq: int, value: float = -2.0) -> bool:
    """Admit one window and, when new, let the engine judge it (as the monitor does)."""
    if not states.admit(partition, stream.session_key, seq):
        return False
    states.engine.observe(Observation(stream, seq, seq * 2.0, seq * 2.0 + 2.0, {"sentiment": {"m": value}}))
    return True


def _dropped(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("affectstream_monitor_sessions_dropped_total", {"reason": reason}) or 0.0


def test_a_redelivery_is_a_duplicate_but_a_new_session_with_the_same_seqs_is_not() -> None:
    states = _states(Clock())
    assert [_feed(states, 0, FIRST, seq) for seq in (0, 1, 2)] == [True, True, True]
    assert not _feed(states, 0, FIRST, 1)  # redelivered
    assert [_feed(states, 0, SECOND, seq) for seq in (0, 1, 2)] == [True, True, True]  # a reconnect
    assert len(states) == 2 and len(states.engine) == 2
    assert metrics.REGISTRY.get_sample_value("affectstream_monitor_sessions") == 2


def test_an_idle_session_expires_with_its_rule_state() -> None:
    clock = Clock()
    states = _states(clock, idle_s=60.0)
    before = _dropped("idle")
    _feed(states, 0, FIRST, 0)
    _feed(states, 0, FIRST, 1)
    assert states.engine.is_open(FIRST.session_key, "low")
    clock.now_s += 30.0
    _feed(states, 1, SECOND, 0)
    clock.now_s += 30.0  # FIRST idle 60 s, SECOND 30 s
    assert states.expire() == 1
    assert FIRST.session_key not in states and SECOND.session_key in states
    assert not states.engine.is_open(FIRST.session_key, "low") and len(states.engine) == 1
    assert _dropped("idle") == before + 1
    # The documented limit: once forgotten, an old window is new again.
    assert _feed(states, 0, FIRST, 1)


def test_beyond_max_sessions_the_longest_idle_is_forgotten_first() -> None:
    clock = Clock()
    states = _states(clock, max_sessions=2)
    before = _dropped("capacity")
    a, b, c = (StreamId("call-s", f"p{i}", session_id="x") for i in range(3))
    _feed(states, 0, a, 0)
    clock.now_s += 1
    _feed(states, 0, b, 0)
    clock.now_s += 1
    _feed(states, 0, a, 1)  # a was seen again: b is now the longest idle
    clock.now_s += 1
    _feed(states, 0, c, 0)
    assert len(states) == 2 and a.session_key in states and c.session_key in states
    assert b.session_key not in states and len(states.engine) == 2
    assert _dropped("capacity") == before + 1
    assert not _feed(states, 0, a, 1)  # a's dedup state was kept


def test_a_rebalance_keeps_the_sessions_of_partitions_still_owned() -> None:
    states = _states(Clock())
    on = {0: StreamId("call-0", "p", session_id="s"), 1: StreamId("call-1", "p", session_id="s"),
          2: StreamId("call-2", "p", session_id="s")}  # fmt: skip
    for partition, stream in on.items():
        _feed(states, partition, stream, 0)
        _feed(states, partition, stream, 1)
    before = _dropped("revoked")
    assert states.retain_partitions({0, 2}) == 1
    assert _dropped("revoked") == before + 1
    assert on[1].session_key not in states and not states.engine.is_open(on[1].session_key, "low")
    for partition in (0, 2):  # kept: dedup state and the open episode both survive
        assert states.engine.is_open(on[partition].session_key, "low")
        assert not _feed(states, partition, on[partition], 1)
        assert _feed(states, partition, on[partition], 2)


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_sessions must be at least 1"):
        _states(Clock(), max_sessions=0)


def test_a_message_whose_session_is_no_valid_id_is_skipped_as_invalid() -> None:
    """The schema's pattern lets a trailing newline through (Python's `$`); StreamId does not: skipped, counted."""
    monitor = Monitor(KafkaSettings(), MonitorSettings(), (LOW,))  # never run: no broker needed
    message = messages.score_message(make_score(FIRST, 0), replay=False)
    tp = TopicPartition("affect.scores", 0)
    assert monitor._process(tp, 0, json.dumps(message | {"session": "first\n"}).encode()) == []
    assert monitor._process(tp, 1, json.dumps(message).encode()) == []
    assert (monitor.stats.records, monitor.stats.invalid, len(monitor.state)) == (2, 1, 1)
