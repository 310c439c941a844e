"""CREMA-D scoring metrics: a clip's score from its windows, the clear-vote rule, r, Acc-2, per-emotion means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from default_model.build import non0_acc2, pearson
from models.adapters.crema_d import EMOTIONS, CremaClip, voice_valence

ClearVote = Literal["happy", "negative"]
NEGATIVE_CODES = frozenset({"A", "D", "F", "S"})
CONSTANT_BELOW = 1e-5  # predictions spanning less than this (on -3..3) carry no information


@dataclass(frozen=True, slots=True)
class WindowScore:
    """What one window of a clip contributes: its length and the model's outputs (ablated too)."""

    duration_s: float
    m: float
    a: float | None  # the audio head; None when the graph does not expose it
    m_ablated: float
    a_ablated: float | None
    text: str  # what Whisper heard


@dataclass(frozen=True, slots=True)
class ClipScore:
    """A clip's scores: the duration-weighted means of its windows' outputs (nan where a head is missing)."""

    m: float
    a: float
    m_ablated: float
    a_ablated: float
    windows: int


def clip_score(windows: Sequence[WindowScore]) -> ClipScore | None:
    """Duration-weighted mean of the windows' outputs; None for a clip that produced no window."""
    weights = np.asarray([w.duration_s for w in windows], np.float64)
    if not len(windows) or weights.sum() <= 0:
        return None

    def mean(values: list[float | None]) -> float:
        if any(v is None for v in values):
            return float("nan")
        return float(np.dot(weights, np.asarray(values, np.float64)) / weights.sum())

    return ClipScore(
        m=mean([w.m for w in windows]), a=mean([w.a for w in windows]),
        m_ablated=mean([w.m_ablated for w in windows]), a_ablated=mean([w.a_ablated for w in windows]),
        windows=len(windows),
    )  # fmt: skip


def clear_vote(votes: Mapping[str, int], n: int) -> ClearVote | None:
    """The voice-only crowd vote of a clip when it is clear, else None.

    Rule: one emotion code has strictly more votes than every other (a unique plurality) and at least half
    of the clip's `n` raters chose it (2 x votes >= n). "happy" when that code is H, "negative" when it is
    A, D, F or S; a clear neutral (N) vote, a tie or a plurality below half is not clear.
    """
    top = max(votes.values())
    leaders = [code for code, count in votes.items() if count == top]
    if len(leaders) != 1 or 2 * top < n:
        return None
    if leaders[0] == "H":
        return "happy"
    return "negative" if leaders[0] in NEGATIVE_CODES else None


@dataclass(frozen=True, slots=True)
class HappyNegative:
    """Acc-2 happy vs negative on the clear-vote clips: a clip counts as happy when its score is above 0."""

    acc2: float
    balanced_acc2: float  # mean of the two classes' accuracies (test: ~6 negative clips per happy one)
    happy: int
    negative: int


def happy_negative(pred: np.ndarray, votes: Sequence[ClearVote | None]) -> HappyNegative:
    sign = np.asarray([1.0 if v == "happy" else -1.0 if v == "negative" else 0.0 for v in votes])
    pred = np.asarray(pred, np.float64)
    happy, negative = int((sign > 0).sum()), int((sign < 0).sum())
    if not happy or not negative:
        acc = non0_acc2(pred, sign) if happy + negative else float("nan")
        return HappyNegative(acc, float("nan"), happy, negative)
    per_class = [non0_acc2(pred[sign == side], sign[sign == side]) for side in (1.0, -1.0)]
    return HappyNegative(non0_acc2(pred, sign), float(np.mean(per_class)), happy, negative)


def pearson_or_zero(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson r; 0 when the predictions are constant (an ablated or dead head: no information, r undefined).
    Float32 outputs of one input vary by ~1e-7 with the batch they ran in: that is constant too."""
    if len(pred) < 3:
        return float("nan")
    return 0.0 if np.ptp(pred) < CONSTANT_BELOW else pearson(pred, true)


def emotion_means(pred: np.ndarray, emotions: Sequence[str]) -> dict[str, float]:
    """Mean prediction per intended emotion (nan for an emotion with no clip)."""
    labels = np.asarray(emotions)
    return {e: float(np.mean(pred[labels == e])) if (labels == e).any() else float("nan") for e in EMOTIONS}


def scored_metrics(clips: Sequence[CremaClip], scores: Sequence[ClipScore]) -> dict[str, object]:
    """Every metric of the section on the clips that have a score (same order)."""
    truth = np.asarray([voice_valence(c) for c in clips])
    votes = [clear_vote(c.voice_votes, c.voice_n) for c in clips]
    emotions = [c.emotion for c in clips]
    heads = {name: np.asarray([getattr(s, name) for s in scores]) for name in ("m", "a", "m_ablated", "a_ablated")}
    r = {name: round(pearson_or_zero(pred, truth), 4) for name, pred in heads.items()}
    acc_m, acc_a = happy_negative(heads["m"], votes), happy_negative(heads["a"], votes)
    return {
        "n_scored": len(scores),
        "r_m": r["m"], "r_a": r["a"], "r_m_ablated": r["m_ablated"], "r_a_ablated": r["a_ablated"],
        "r_m_drop": round(r["m"] - r["m_ablated"], 4), "r_a_drop": round(r["a"] - r["a_ablated"], 4),
        "acc2_happy_negative_m": round(acc_m.acc2, 4), "acc2_happy_negative_a": round(acc_a.acc2, 4),
        "balanced_acc2_happy_negative_m": round(acc_m.balanced_acc2, 4),
        "balanced_acc2_happy_negative_a": round(acc_a.balanced_acc2, 4),
        "clear_vote_clips": {"happy": acc_m.happy, "negative": acc_m.negative},
        "emotion_means": {
            e: {"m": round(m, 4), "a": round(a, 4), "voice_valence": round(v, 4), "clips": emotions.count(e)}
            for (e, m), a, v in zip(
                emotion_means(heads["m"], emotions).items(), emotion_means(heads["a"], emotions).values(),
                emotion_means(truth, emotions).values(), strict=True,
            )
        },
    }  # fmt: skip
