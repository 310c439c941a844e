"""What the alert monitor remembers per session, bounded: the last seq seen and the rule engine's tracks.

A session (one ingest session of one participant, `StreamId.session_key`) is forgotten when no window of it
came for `idle_s`, or, beyond `max_sessions`, the one idle longest is forgotten first. A rebalance keeps the
sessions of the partitions this monitor still owns and forgets the others (`retain_partitions`).
Entries are kept in the order they were last seen, so expiry and eviction look only at the front.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from agent import metrics
from agent.rules import RuleEngine, SessionKey

DropReason = Literal["idle", "capacity", "revoked"]


@dataclass(slots=True)
class _Entry:
    partition: int
    last_seq: int
    last_seen_s: float


class SessionStates:
    def __init__(
        self,
        engine: RuleEngine,
        *,
        idle_s: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.engine = engine
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.clock = clock
        self.dropped: dict[DropReason, int] = {"idle": 0, "capacity": 0, "revoked": 0}
        self._entries: OrderedDict[SessionKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session: object) -> bool:
        return session in self._entries

    def admit(self, partition: int, session: SessionKey, seq: int) -> bool:
        """True when `seq` is new for `session` (the caller evaluates the window); False for a duplicate,
        i.e. a seq at or below the last one seen (the publisher delivers at least once, in order)."""
        now = self.clock()
        self.expire(now)
        entry = self._entries.get(session)
        if entry is None:
            entry = self._entries[session] = _Entry(partition, -1, now)
            while len(self._entries) > self.max_sessions:
                self._drop(next(iter(self._entries)), "capacity")
        else:
            self._entries.move_to_end(session)
            entry.last_seen_s = now
            entry.partition = partition
        self._publish_size()
        if seq <= entry.last_seq:
            return False
        entry.last_seq = seq
        return True

    def expire(self, now: float | None = None) -> int:
        """Forget the sessions idle for `idle_s` or longer; returns how many."""
        now = self.clock() if now is None else now
        expired = 0
        while self._entries:
            session, entry = next(iter(self._entries.items()))
            if now - entry.last_seen_s < self.idle_s:
                break
            self._drop(session, "idle")
            expired += 1
        if expired:
            self._publish_size()
        return expired

    def retain_partitions(self, owned: Collection[int]) -> int:
        """Forget the sessions of partitions not in `owned` (another monitor has them now); returns how many."""
        gone = [session for session, entry in self._entries.items() if entry.partition not in owned]
        for session in gone:
            self._drop(session, "revoked")
        self._publish_size()
        return len(gone)

    def _drop(self, session: SessionKey, reason: DropReason) -> None:
        del self._entries[session]
        self.engine.forget(session)
        self.dropped[reason] += 1
        metrics.MONITOR_SESSIONS_DROPPED.labels(reason=reason).inc()

    def _publish_size(self) -> None:
        metrics.MONITOR_SESSIONS.set(len(self._entries))
