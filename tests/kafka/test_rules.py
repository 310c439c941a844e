"""Alert rules: table tests of raise/clear with persistence and hysteresis, fences, and loading."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.rules import Fence, Observation, Rule, RuleEngine, load_rules
from core.errors import ConfigError
from core.types import StreamId

A = StreamId("call-a", "p1")
B = StreamId("call-b", "p1")
LOW = Rule(name="low", kind="mean_below", task="sentiment", windows=3, threshold=-1.0, clear_threshold=-0.5,
           persist=2)  # fmt: skip
SEVERE = Rule(name="severe", kind="count_at_least", task="depression", windows=5, threshold=15, min_count=3,
              clear_max_count=1)  # fmt: skip


def _obs(stream: StreamId, seq: int, task: str, value: float | None) -> Observation:
    return Observation(stream, seq, seq * 2.0, seq * 2.0 + 2.0, {task: {"m": value}} if value is not None else {})


def _run(engine: RuleEngine, stream: StreamId, task: str, values: Sequence[float | None], start: int = 0,
         emit: bool = True) -> list[tuple[int, str, float]]:  # fmt: skip
    out: list[tuple[int, str, float]] = []
    for seq, value in enumerate(values, start):
        out += [(e.seq, e.event, round(e.value, 3)) for e in engine.observe(_obs(stream, seq, task, value), emit=emit)]
    return out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # mean of the last 3 must stay < -1 for 2 windows to raise, and >= -0.5 for 2 windows to clear
        ([-2, -2, -2, -2, -2], [(3, "raised", -2.0)]),
        ([-2, -2, -2, 3, -2, -2], []),  # persistence: one window below, then interrupted
        ([-2, -2, -2, -2, -0.8, -0.8, -0.8, -0.8], [(3, "raised", -2.0)]),  # between the bounds: stays open
        ([-2, -2, -2, -2, 1, 1, 1, 1], [(3, "raised", -2.0), (6, "cleared", 1.0)]),
        (
            [-2, -2, -2, -2, 1, 1, 1, 1, -3, -3, -3, -3],
            [(3, "raised", -2.0), (6, "cleared", 1.0), (10, "raised", -3.0)],
        ),  # fmt: skip
        ([-2, None, -2, None, -2, -2], [(5, "raised", -2.0)]),  # windows without the task do not count
    ],
)
def test_mean_below_persistence_and_hysteresis(values: list[float | None], expected: list[tuple]) -> None:
    assert _run(RuleEngine((LOW,)), A, "sentiment", values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([16, 10, 16, 10, 16], [(4, "raised", 3.0)]),  # 3 of the last 5 at or above 15
        ([16, 10, 16, 10, 14.9], []),
        ([15, 15, 15, 0, 0, 0, 0, 0], [(4, "raised", 3.0), (6, "cleared", 1.0)]),
        ([15, 15, 15, 0, 0, 15, 0, 15], [(4, "raised", 3.0)]),  # 2 of 5 is not yet "at most 1"
    ],
)
def test_count_k_of_n(values: list[float], expected: list[tuple]) -> None:
    assert _run(RuleEngine((SEVERE,)), A, "depression", values) == expected


def test_streams_are_independent() -> None:
    engine = RuleEngine((LOW,))
    events = []
    for seq in range(5):
        events += engine.observe(_obs(A, seq, "sentiment", -2))
        events += engine.observe(_obs(B, seq, "sentiment", 2))
    assert [(e.stream, e.event, e.seq) for e in events] == [(A, "raised", 3)]


def test_sessions_of_one_stream_are_judged_apart_and_can_be_forgotten() -> None:
    """A reconnect (same key, new session, seq from 0 again) starts its own rolling windows and episode."""
    again = StreamId("call-a", "p1", session_id="second")
    engine = RuleEngine((LOW,))
    assert _run(engine, A, "sentiment", [-2] * 5) == [(3, "raised", -2.0)]
    assert _run(engine, again, "sentiment", [-2] * 5) == [(3, "raised", -2.0)]
    assert len(engine) == 2
    engine.forget(A.session_key)
    assert len(engine) == 1 and not engine.is_open(A.session_key, "low") and engine.is_open(again.session_key, "low")


def test_a_fence_is_only_adopted_by_a_session_without_state() -> None:
    engine = RuleEngine((LOW,))
    assert _run(engine, A, "sentiment", [-2] * 5) == [(3, "raised", -2.0)]
    # A rebalance re-reads the alert log; a session held here keeps its own (newer) state.
    engine.restore_fences({(A.session_key, "low"): Fence(seq=1, open=False, episode_seq=-1)})
    assert _run(engine, A, "sentiment", [1.0] * 4, start=5) == [(7, "cleared", 1.0)]


def test_silent_replay_then_fence_neither_repeats_nor_loses() -> None:
    values = [-2, -2, -2, -2, -2, 1, 1, 1, 1]
    expected = _run(RuleEngine((LOW,)), A, "sentiment", values)
    assert expected == [(3, "raised", -2.0), (7, "cleared", 1.0)]
    # The raise at seq 3 was acknowledged before a crash: the alert log fences it.
    engine = RuleEngine((LOW,))
    engine.restore_fences({(A.session_key, "low"): Fence(seq=3, open=True, episode_seq=3)})
    assert _run(engine, A, "sentiment", values) == [(7, "cleared", 1.0)]
    # Short lookback: only seqs 4.. are re-read; the fence still says the episode is open.
    engine = RuleEngine((LOW,))
    engine.restore_fences({(A.session_key, "low"): Fence(seq=3, open=True, episode_seq=3)})
    assert _run(engine, A, "sentiment", values[4:], start=4) == [(7, "cleared", 1.0)]
    # Records before the committed offset are silent: state is rebuilt, nothing emitted.
    engine = RuleEngine((LOW,))
    assert _run(engine, A, "sentiment", values[:5], emit=False) == []
    assert engine.is_open(A.session_key, "low")
    assert _run(engine, A, "sentiment", values[5:], start=5) == [(7, "cleared", 1.0)]


def test_the_fence_overrides_a_partial_replay() -> None:
    """The log says an episode opened at seq 2 is still open at 8; a replay from 6 alone cannot know it."""
    engine = RuleEngine((LOW,))
    engine.restore_fences({(A.session_key, "low"): Fence(seq=8, open=True, episode_seq=2)})
    events = [engine.observe(_obs(A, seq, "sentiment", 1.0)) for seq in range(6, 11)]
    assert [(e.seq, e.event, e.episode_seq) for batch in events for e in batch] == [(10, "cleared", 2)]


def test_example_rules_file_loads() -> None:
    rules = load_rules(Path(__file__).resolve().parents[2] / "deploy" / "rules.example.yaml")
    assert [r.name for r in rules] == ["low_sentiment", "severe_depression"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: []", "at least 1"),
        (
            "rules:\n  - {name: x, kind: mean_below, task: s, windows: 3, threshold: 0, clear_threshold: -1}",
            r"rules\[0\] \(x\).*clear_threshold must be >= threshold",
        ),
        (
            "rules:\n  - {name: x, kind: count_at_least, task: d, windows: 3, threshold: 15}",
            "needs min_count",
        ),
        (
            "rules:\n  - {name: x, kind: count_at_least, task: d, windows: 3, threshold: 15, min_count: 2, "
            "clear_max_count: 2}",
            "below min_count",
        ),
        (
            "rules:\n  - {name: x, kind: mean_below, task: s, windows: 0, threshold: 0, colour: red}",
            r"rules\[0\] \(x\)\.windows.*rules\[0\] \(x\)\.colour",
        ),
        ("rules:\n  - {name: x, kind: median, task: s, windows: 3, threshold: 0}", r"\.kind"),
        (
            "rules:\n  - {name: x, kind: mean_below, task: s, windows: 3, threshold: 0}\n"
            "  - {name: x, kind: mean_above, task: s, windows: 3, threshold: 0}",
            "unique; repeated: x",
        ),
        ("rules: [unclosed", "not valid YAML"),
    ],
)
def test_bad_rules_files_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_rules(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
