"""Alert rules over per-stream rolling windows of scores: sans-IO, deterministic, loaded from YAML.

A rule watches one task output of one stream over its last `windows` scored windows. An episode is raised
after the raise condition held for `persist` consecutive windows and cleared after the clear condition
(hysteresis: a separate, less strict threshold) held for `persist` consecutive windows: one alert and one
clear per episode. Replaying the same scores gives the same events at the same seqs, which is what lets the
monitor rebuild its state after a restart (agent/monitor.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.text_input import read_text
from core.types import StreamId

Output = Literal["m", "t", "a", "v"]
Severity = Literal["info", "warning", "critical"]


class Rule(BaseModel):
    """One rule; `kind` picks the statistic: the mean of the last N values, or how many are ≥ threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # a NaN threshold never fires

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: Literal["mean_below", "mean_above", "count_at_least"]
    task: str = Field(min_length=1)
    output: Output = "m"
    windows: int = Field(ge=1, le=1000)  # N
    threshold: float
    clear_threshold: float | None = None  # mean rules: the hysteresis bound (default: threshold)
    min_count: int | None = Field(None, ge=1)  # count rule: K of the last N
    clear_max_count: int | None = Field(None, ge=0)  # count rule: clear at or below this (default K - 1)
    persist: int = Field(1, ge=1, le=1000)
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.kind == "count_at_least":
            if self.min_count is None:
                raise ValueError("count_at_least needs min_count (K of the last `windows`)")
            if self.min_count > self.windows:
                raise ValueError(f"min_count {self.min_count} exceeds windows {self.windows}")
            if self.clear_max_count is not None and self.clear_max_count >= self.min_count:
                raise ValueError("clear_max_count must be below min_count (hysteresis)")
            if self.clear_threshold is not None:
                raise ValueError("clear_threshold is for mean rules; count rules use clear_max_count")
        else:
            if self.min_count is not None or self.clear_max_count is not None:
                raise ValueError("min_count/clear_max_count are for count_at_least rules")
            clear = self.clear_threshold
            if clear is not None and self.kind == "mean_below" and clear < self.threshold:
                raise ValueError("mean_below: clear_threshold must be >= threshold (hysteresis)")
            if clear is not None and self.kind == "mean_above" and clear > self.threshold:
                raise ValueError("mean_above: clear_threshold must be <= threshold (hysteresis)")
        return self

    @property
    def statistic(self) -> str:
        return "count" if self.kind == "count_at_least" else "mean"

    def measure(self, values: Iterable[float]) -> float:
        values = list(values)
        if self.kind == "count_at_least":
            return float(sum(1 for v in values if v >= self.threshold))
        return sum(values) / len(values)

    def raises(self, stat: float) -> bool:
        if self.kind == "mean_below":
            return stat < self.threshold
        if self.kind == "mean_above":
            return stat > self.threshold
        return stat >= (self.min_count or 0)

    def clears(self, stat: float) -> bool:
        if self.kind == "count_at_least":
            limit = self.clear_max_count if self.clear_max_count is not None else (self.min_count or 1) - 1
            return stat <= limit
        bound = self.threshold if self.clear_threshold is None else self.clear_threshold
        return stat >= bound if self.kind == "mean_below" else stat <= bound


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> RulesFile:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        return self


def _describe(error: Mapping[str, object], data: object) -> str:
    loc = [str(p) for p in error["loc"]]  # type: ignore[attr-defined]
    where = ".".join(loc) or "(file)"
    if len(loc) >= 2 and loc[0] == "rules" and loc[1].isdigit() and isinstance(data, dict):
        rules = data.get("rules")
        if isinstance(rules, list) and int(loc[1]) < len(rules) and isinstance(rules[int(loc[1])], dict):
            name = rules[int(loc[1])].get("name")
            where = f"rules[{loc[1]}] ({name})" + "".join(f".{p}" for p in loc[2:])
    return f"{where}: {error['msg']}"


def load_rules(path: Path) -> tuple[Rule, ...]:
    """Read and validate a rules file; ConfigError lists every problem with where it is."""
    text = read_text(Path(path), "rules file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())  # PyYAML's message spans lines (with a caret under the spot)
        raise ConfigError(f"rules file {path} is not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"rules file {path} nests too deeply") from None
    try:
        return tuple(RulesFile.model_validate(data).rules)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, data) for e in exc.errors())  # type: ignore[arg-type]
        raise ConfigError(" ".join(f"rules file {path}: {problems}".split())) from None  # one line


@dataclass(frozen=True, slots=True)
class Observation:
    """One scored window as the monitor sees it: task -> output (m, t, a, v) -> value."""

    stream: StreamId
    seq: int
    start_s: float
    end_s: float
    values: Mapping[str, Mapping[str, float | None]]
    replay: bool = False


@dataclass(frozen=True, slots=True)
class AlertEvent:
    stream: StreamId
    rule: str
    event: Literal["raised", "cleared"]
    episode_seq: int  # seq of the window that raised the episode
    seq: int
    start_s: float
    end_s: float
    task: str
    statistic: str
    value: float
    threshold: float
    windows: int
    severity: Severity
    replay: bool


@dataclass(frozen=True, slots=True)
class Fence:
    """What the alert log says happened up to `seq`: evaluation up to there is silent, then this state."""

    seq: int
    open: bool
    episode_seq: int


@dataclass
class _Track:
    values: deque[float]
    open: bool = False
    episode_seq: int = -1
    streak: int = 0  # consecutive windows for which the opposite state's condition held
    fence: Fence | None = None


SessionKey = tuple[str, str]  # StreamId.session_key: (stream key, session id)


@dataclass
class RuleEngine:
    """Per (session, rule) rolling state; `observe` returns the alert events a window causes.

    A stream's sessions are judged apart: seq restarts at 0 in each, so a reconnect starts new rolling windows.
    Fences from the alert log wait until their session's next window creates its track; a session that
    already has state keeps it (a rebalance does not rewind what this process has seen itself)."""

    rules: tuple[Rule, ...]
    _tracks: dict[SessionKey, dict[str, _Track]] = field(default_factory=dict)
    _fences: dict[tuple[SessionKey, str], Fence] = field(default_factory=dict)

    def _track(self, session: SessionKey, rule: Rule) -> _Track:
        tracks = self._tracks.setdefault(session, {})
        track = tracks.get(rule.name)
        if track is None:
            fence = self._fences.pop((session, rule.name), None)
            track = tracks[rule.name] = _Track(values=deque(maxlen=rule.windows), fence=fence)
        return track

    def restore_fences(self, fences: Mapping[tuple[SessionKey, str], Fence]) -> None:
        """Adopt the alert log's state for sessions without state here: silent up to each fence's seq, then
        its state. Replaces fences not yet adopted."""
        self._fences = {key: fence for key, fence in fences.items() if key[0] not in self._tracks}

    def forget(self, session: SessionKey) -> None:
        """Drop a session's rolling state (it expired, or its partition went to another monitor)."""
        self._tracks.pop(session, None)

    def is_open(self, session: SessionKey, rule_name: str) -> bool:
        track = self._tracks.get(session, {}).get(rule_name)
        return bool(track and track.open)

    def __len__(self) -> int:
        """Sessions with state."""
        return len(self._tracks)

    def observe(self, obs: Observation, *, emit: bool = True) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for rule in self.rules:
            value = obs.values.get(rule.task, {}).get(rule.output)
            if value is None:
                continue  # shed window or a model without that task/output: nothing to judge
            track = self._track(obs.stream.session_key, rule)
            track.values.append(value)
            if track.fence is not None and obs.seq > track.fence.seq:
                if track.open != track.fence.open:
                    track.streak = 0
                track.open, track.episode_seq = track.fence.open, track.fence.episode_seq
                track.fence = None
            event = _step(rule, track, obs)
            if event is not None and emit and track.fence is None:
                events.append(event)
        return events


def _step(rule: Rule, track: _Track, obs: Observation) -> AlertEvent | None:
    if len(track.values) < rule.windows:
        return None
    stat = rule.measure(track.values)
    holds = rule.clears(stat) if track.open else rule.raises(stat)
    track.streak = track.streak + 1 if holds else 0
    if track.streak < rule.persist:
        return None
    track.streak = 0
    track.open = not track.open
    if track.open:
        track.episode_seq = obs.seq
    return AlertEvent(
        stream=obs.stream,
        rule=rule.name,
        event="raised" if track.open else "cleared",
        episode_seq=track.episode_seq,
        seq=obs.seq,
        start_s=obs.start_s,
        end_s=obs.end_s,
        task=rule.task,
        statistic=rule.statistic,
        value=stat,
        threshold=rule.threshold,
        windows=rule.windows,
        severity=rule.severity,
        replay=obs.replay,
    )
