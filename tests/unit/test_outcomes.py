"""The outcome report's arithmetic (followup_service/outcomes/domain.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.outcomes.domain import VALUE, Cell, paired, report, wilson

CATEGORIES = ["promoter", "passive", "detractor"]


def test_groups_shares_and_the_paired_nps_change() -> None:
    cells = [
        Cell("ticket", "detractor", "passive", 6),
        Cell("ticket", "detractor", "detractor", 4),
        Cell("referral", "promoter", "promoter", 10),
        Cell("none", "passive", "promoter", 2),
        Cell("none", "passive", "passive", 2),
    ]
    result = report(cells)
    by = {g.group: g for g in result.groups}
    assert [g.group for g in result.groups] == ["none", "referral", "ticket"]
    assert (by["ticket"].resurveyed, by["ticket"].detractors_up.moved, by["ticket"].detractors_up.share) == (10, 6, 0.6)
    assert by["ticket"].nps_change.points == 60.0  # six of ten from -1 to 0
    assert by["none"].passives_up.share == 0.5 and by["none"].nps_change.points == 50.0
    assert by["referral"].nps_change.points == 0.0 and by["referral"].nps_change.low == 0.0
    assert result.followed_up.n == 20 and result.followed_up.points == 30.0
    assert result.not_followed_up.points == 50.0 and result.difference.points == -20.0
    low, high = result.difference.low, result.difference.high
    assert low is not None and high is not None and low < -20.0 < high


def test_wilson_intervals() -> None:
    assert wilson(0, 0).share is None
    five_of_ten = wilson(5, 10)
    assert (five_of_ten.low, five_of_ten.high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == 1.0


@given(st.lists(st.tuples(st.sampled_from(CATEGORIES), st.sampled_from(CATEGORIES), st.integers(1, 50)), min_size=1))
def test_the_paired_change_is_the_nps_after_minus_the_nps_before(moves: list[tuple[str, str, int]]) -> None:
    cells = [Cell("g", before, after, n) for before, after, n in moves]  # type: ignore[arg-type]
    n = sum(c.n for c in cells)
    nps = {side: 100 * sum(VALUE[getattr(c, side)] * c.n for c in cells) / n for side in ("before", "after")}
    change = paired(cells)
    assert change.points == pytest.approx(nps["after"] - nps["before"], abs=0.01)
    assert change.low is not None and change.high is not None and change.low <= change.points <= change.high
