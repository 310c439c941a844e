"""Every window of a scores topic, counted per session: what came, what came twice, what is missing.

A window is identified by (stream key, session, seq) (docs/kafka.md); a session's seqs count from 0, so a
session that lost nothing has the distinct seqs 0..last, and one delivered exactly once has no seq twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from agent.topic_reader import TopicRecord


@dataclass(frozen=True)
class SessionWindows:
    key: str  # "<call_id>/<participant_id>"
    session: str
    seqs: tuple[int, ...]  # distinct, ascending
    duplicated: tuple[int, ...]  # seqs that came more than once
    records: int  # copies included
    last_end_s: float  # media time at the end of the last window
    shed: int  # windows published unscored (overload)

    @property
    def contiguous(self) -> bool:
        """0..last, none missing."""
        return self.seqs == tuple(range(len(self.seqs)))

    @property
    def exactly_once(self) -> bool:
        return self.contiguous and not self.duplicated


def audit(records: Iterable[TopicRecord]) -> dict[str, SessionWindows]:
    """Per session id, the windows of `records` (a whole scores topic, read back)."""
    copies: dict[str, Counter[int]] = {}
    keys: dict[str, str] = {}
    last_end: dict[str, float] = {}
    shed: Counter[str] = Counter()
    for record in records:
        message = record.message
        session = str(message.get("session", "0"))  # schema version 1 had none (docs/kafka.md)
        seq = int(message["seq"])
        if copies.setdefault(session, Counter())[seq] == 0:
            shed[session] += bool(message.get("shed"))
        copies[session][seq] += 1
        keys[session] = record.key
        last_end[session] = max(last_end.get(session, 0.0), float(message["end_s"]))
    return {
        session: SessionWindows(
            key=keys[session],
            session=session,
            seqs=tuple(sorted(seen)),
            duplicated=tuple(sorted(seq for seq, n in seen.items() if n > 1)),
            records=sum(seen.values()),
            last_end_s=last_end[session],
            shed=shed[session],
        )  # fmt: skip
        for session, seen in copies.items()
    }
