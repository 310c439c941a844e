"""The CREMA-D section's rules on hand-made inputs: the clear vote, a clip's duration-weighted score, Acc-2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.cremad_metrics import WindowScore, clear_vote, clip_score, happy_negative, pearson_or_zero


def votes(**counts: int) -> dict[str, int]:
    return {code: counts.get(code, 0) for code in ("A", "D", "F", "H", "N", "S")}


@pytest.mark.parametrize(
    "counts, n, expected",
    [
        (votes(H=5, N=4), 9, "happy"),  # plurality H, 5 of 9 >= half
        (votes(H=5, N=5), 10, None),  # a tie is not clear
        (votes(H=4, N=3, A=2), 9, None),  # plurality below half of the raters
        (votes(A=5, D=1, N=4), 10, "negative"),  # exactly half agree
        (votes(S=6, H=1), 10, "negative"),
        (votes(F=3, D=3, A=2), 8, None),  # two negative codes tied
        (votes(N=9), 9, None),  # a clear neutral is neither side
        (votes(D=4, N=2), 9, None),  # 4 of 9 raters: n counts raters, not only these votes
    ],
)
def test_clear_vote_rule(counts: dict[str, int], n: int, expected: str | None) -> None:
    assert clear_vote(counts, n) == expected


def window(duration_s: float, m: float, a: float | None = 0.0) -> WindowScore:
    return WindowScore(duration_s, m, a, m_ablated=-m, a_ablated=None if a is None else 2 * a, text="x")


def test_clip_score_is_the_duration_weighted_mean() -> None:
    score = clip_score([window(1.0, 3.0, 1.0), window(3.0, -1.0, 0.0)])
    assert score is not None and score.windows == 2
    assert score.m == pytest.approx(0.0, abs=1e-12)  # (1 x 3 + 3 x -1) / 4
    assert score.a == pytest.approx(0.25)
    assert score.m_ablated == pytest.approx(0.0, abs=1e-12)
    assert score.a_ablated == pytest.approx(0.5)


def test_clip_score_without_windows_or_head() -> None:
    assert clip_score([]) is None
    score = clip_score([window(2.0, 1.5, None)])
    assert score is not None and score.m == pytest.approx(1.5) and math.isnan(score.a)


def test_happy_negative_acc2_counts_only_clear_clips() -> None:
    pred = np.array([0.5, -0.2, 0.1, -3.0, 2.0, 0.0])
    clear = ["happy", "negative", "negative", None, None, "negative"]
    result = happy_negative(pred, clear)
    assert (result.happy, result.negative) == (1, 3)
    assert result.acc2 == pytest.approx(3 / 4)  # 0.1 is above 0: called happy; 0.0 is not
    assert result.balanced_acc2 == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(happy_negative(pred, [None] * 6).acc2)


def test_constant_predictions_have_r_zero() -> None:
    truth = np.array([-1.0, 0.0, 2.0, 1.0])
    assert pearson_or_zero(np.full(4, 0.078), truth) == 0.0
    assert pearson_or_zero(np.array([0.078, 0.078 + 1e-7, 0.078, 0.078 - 1e-7]), truth) == 0.0  # float noise
    assert pearson_or_zero(truth * 2 + 1, truth) == pytest.approx(1.0)
