"""The experiments' estimators against hand-computed values (followup_service/experiments/estimators.py)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.experiments.estimators import Pair, change, contribution, cuped, effect, needed_per_arm

Z = 1.959963984540054


def test_a_score_s_contribution() -> None:
    assert [contribution(s) for s in range(11)] == [-100] * 7 + [0, 0] + [100, 100]
    with pytest.raises(ValueError):
        contribution(11)


def test_an_arm_s_change_by_hand() -> None:
    # detractor -> passive (+100), detractor -> promoter (+200), passive -> passive (0), promoter -> detractor (-200)
    pairs = [Pair(-100, 0), Pair(-100, 100), Pair(0, 0), Pair(100, -100)]
    got = change(pairs)
    assert got is not None
    # mean 25; sample variance of (100, 200, 0, -200) = (75^2 + 175^2 + 25^2 + 225^2) / 3 = 29,166.67
    se = math.sqrt(87_500 / 3 / 4)
    assert got.points == pytest.approx(25.0) and got.n == 4
    assert (got.low, got.high) == (pytest.approx(25 - Z * se), pytest.approx(25 + Z * se))
    assert change(pairs[:1]) is None


def test_an_effect_is_the_difference_of_changes_with_welch_s_error() -> None:
    treated = [Pair(-100, 100), Pair(-100, 0), Pair(-100, 100)]  # changes 200, 100, 200: mean 166.67, var 3,333.33
    control = [
        Pair(-100, -100),
        Pair(-100, 0),
        Pair(-100, 100),
        Pair(-100, 0),
    ]  # 0, 100, 200, 100: mean 100, var 6,666.67
    got = effect(treated, control)
    assert got is not None
    se = math.sqrt(3_333.3333333 / 3 + 6_666.6666667 / 4)
    assert got.points == pytest.approx(200 / 3) and got.low == pytest.approx(200 / 3 - Z * se)
    assert effect(treated, control[:1]) is None


def test_regression_to_the_mean_is_no_effect() -> None:
    """Detractors drift up by themselves; with no treatment both arms drift alike, and the effect's
    interval covers 0 (while the treated arm's own change is far above 0)."""
    rng = random.Random(5)

    def drifted() -> Pair:
        return Pair(-100, rng.choices([-100, 0, 100], [0.44, 0.36, 0.20])[0])

    treated = [drifted() for _ in range(4_000)]
    control = [drifted() for _ in range(4_000)]
    own = change(treated)
    both = effect(treated, control)
    assert own is not None and own.low > 50  # "following up worked", says the naive reading
    assert both is not None and both.low < 0 < both.high


def test_cuped_is_the_change_when_everyone_started_alike_and_tighter_when_they_did_not() -> None:
    same_start = [Pair(-100, 100), Pair(-100, 0)], [Pair(-100, 0), Pair(-100, -100), Pair(-100, 0)]
    plain, adjusted = effect(*same_start), cuped(*same_start)
    assert plain is not None and adjusted is not None and adjusted.points == pytest.approx(plain.points)
    rng = random.Random(9)

    def person(lift: int) -> Pair:
        before = rng.choice([-100, 0, 100])
        after = max(-100, min(100, before + rng.choice([-100, 0, 0, 100]) + lift))
        return Pair(before, after)

    treated = [person(100 if rng.random() < 0.3 else 0) for _ in range(3_000)]
    control = [person(0) for _ in range(3_000)]
    plain, adjusted = effect(treated, control), cuped(treated, control)
    assert plain is not None and adjusted is not None
    assert adjusted.high - adjusted.low < plain.high - plain.low  # variance reduced
    assert abs(adjusted.points - plain.points) < (plain.high - plain.low) / 2


@given(st.lists(st.tuples(st.sampled_from([-100, 0, 100]), st.sampled_from([-100, 0, 100])), min_size=2, max_size=50))
def test_an_arm_against_itself_is_no_effect(pairs: list[tuple[int, int]]) -> None:
    arm = [Pair(*p) for p in pairs]
    for estimate in (effect(arm, arm), cuped(arm, arm)):
        assert estimate is not None and estimate.points == pytest.approx(0.0, abs=1e-9)


def test_power_by_hand() -> None:
    # 2 (1.95996 + 0.84162)^2 x 120^2 / 5^2 = 15.69776 x 576 = 9,041.9 -> 9,042; a 15-point effect: / 9
    assert needed_per_arm(120.0, 5.0) == 9_042
    assert needed_per_arm(120.0, 15.0) == 1_005
    with pytest.raises(ValueError):
        needed_per_arm(120.0, 0.0)
