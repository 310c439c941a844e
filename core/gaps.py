"""The one gap policy: when audio that does not start where the previous audio ended is timestamp rounding, a
gap (audio missing), an overlap (audio repeated) or a clock jump.

Live ingest (`core.audiotime.AudioTimeline`, RTP timestamps) and recorded files (`core.audiotime.AudioClock`,
container PTS) judge their jumps here; what each then does (fill with silence, skip, restart its count) is
theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Jump(Enum):
    NONE = "none"  # contiguous, up to timestamp rounding
    GAP = "gap"  # audio missing: lost packets, DTX, a paused recording
    OVERLAP = "overlap"  # audio repeated: a duplicate or retransmitted packet
    CLOCK_JUMP = "clock_jump"  # further than any loss explains: the sender restarted its clock


@dataclass(frozen=True, slots=True)
class GapPolicy:
    """When audio that starts `offset` samples after where the previous audio ended is a gap (or overlap)."""

    tolerance_s: float  # a jump up to this (at least one sample) is rounding
    max_gap_s: float | None = None  # a jump beyond this, either way, is a clock jump; None: any gap is real

    def judge(self, offset: float, rate_hz: int) -> Jump:
        if self.max_gap_s is not None and abs(offset) > self.max_gap_s * rate_hz:
            return Jump.CLOCK_JUMP
        tolerance = max(1.0, self.tolerance_s * rate_hz)
        if offset > tolerance:
            return Jump.GAP
        if offset < -tolerance:
            return Jump.OVERLAP
        return Jump.NONE


# Live and recorded timestamps differ in precision and in what a long jump means. RTP timestamps count samples
# exactly, so 2 ms absorbs only packetiser jitter, and a jump past 10 s is no loss but a sender that restarted
# its clock. Container PTS are rounded to the stream's time base (1 ms in Matroska and FLV), so 20 ms is
# rounding, and a jump of any length is recorded time (a paused recording).
LIVE_GAPS = GapPolicy(tolerance_s=0.002, max_gap_s=10.0)
RECORDED_GAPS = GapPolicy(tolerance_s=0.020)
