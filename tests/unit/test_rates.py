"""Response rates' pure rules: the Wilson interval, and which invitation a response answers."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring_service.rates.domain import Answer, Invited, answered, recompute
from shared.nps import wilson95

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
WINDOW = timedelta(days=14)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (81, 263, 0.2553, 0.3662)],
)
def test_wilson_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson95(successes, n)
    assert interval is not None
    assert interval.low == pytest.approx(low, abs=5e-5) and interval.high == pytest.approx(high, abs=5e-5)


@given(st.integers(min_value=1, max_value=100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_holds_the_rate_inside_zero_and_one_and_narrows_with_n(counts: tuple[int, int]) -> None:
    successes, n = counts
    interval = wilson95(successes, n)
    assert interval is not None
    assert 0.0 <= interval.low <= successes / n <= interval.high <= 1.0
    wider = wilson95(successes, n)
    more = wilson95(successes * 4, n * 4)
    assert wider is not None and more is not None
    assert more.high - more.low <= wider.high - wider.low + 1e-12
    assert math.isfinite(interval.low) and math.isfinite(interval.high)


def test_no_invitation_has_no_rate_and_impossible_counts_are_refused() -> None:
    assert wilson95(0, 0) is None
    with pytest.raises(ValueError, match="successes"):
        wilson95(3, 2)


def inv(iid: str, person: str = "p", survey: str = "q", hours: float = 0) -> Invited:
    at = T0 + timedelta(hours=hours)
    return Invited(iid, person, survey, at, at.date(), ("all",), at)


def ans(rid: str, person: str = "p", survey: str = "q", hours: float = 1, named: str | None = None) -> Answer:
    return Answer(rid, person, survey, T0 + timedelta(hours=hours), named, T0 + timedelta(hours=hours))


def test_a_response_answers_the_latest_invitation_of_its_survey_within_the_window() -> None:
    invitations = [inv("a", hours=0), inv("b", hours=24), inv("c", hours=48, survey="other"), inv("late", hours=100)]
    assert answered(invitations, [ans("r", hours=50)], WINDOW) == {"b"}  # not c (another survey), not late
    assert answered(invitations, [ans("r", hours=24)], WINDOW) == {"b"}  # sent at that very moment counts
    assert answered(invitations, [ans("r", hours=24 * 15 + 1)], WINDOW) == {"late"}
    assert answered(invitations, [ans("r", hours=24 * 40)], WINDOW) == set()  # beyond the window


def test_a_named_invitation_wins_only_when_it_is_the_person_s() -> None:
    invitations = [inv("a", hours=0), inv("b", hours=5), inv("theirs", person="q", hours=0)]
    assert answered(invitations, [ans("r", hours=6, named="a")], WINDOW) == {"a"}
    assert answered(invitations, [ans("r", hours=6, named="theirs")], WINDOW) == {"b"}  # someone else's: ignored
    assert answered(invitations, [ans("r", hours=6, named="missing")], WINDOW) == {"b"}  # unknown: the window rule


def test_counts_are_by_the_invitation_s_day_and_segments() -> None:
    first = Invited("a", "p", "q", T0, date(2026, 12, 1), ("all", "channel:email"), T0)
    second = Invited("b", "p2", "q", T0, date(2026, 12, 1), ("all", "channel:sms"), T0)
    counts = recompute([first, second], [ans("r", person="p", hours=30)], WINDOW)
    assert {k: (v.invited, v.responded) for k, v in counts.items()} == {
        ("all", date(2026, 12, 1)): (2, 1),
        ("channel:email", date(2026, 12, 1)): (1, 1),
        ("channel:sms", date(2026, 12, 1)): (1, 0),
    }
