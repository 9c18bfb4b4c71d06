from datetime import UTC, datetime

import pytest

from alerts_service.domain import DropRule, Transition, alert_id, transition
from shared.nps import Counts

RULE = DropRule(drop_points=10, min_responses=30)


def test_a_big_enough_drop_on_enough_responses_is_a_drop() -> None:
    baseline = Counts(60, 20, 20)  # NPS 40
    current = Counts(15, 10, 15)  # NPS 0
    assert RULE.dropped(current, baseline) is True


def test_a_drop_just_below_the_threshold_is_not() -> None:
    baseline = Counts(50, 30, 20)  # NPS 30
    current = Counts(23, 12, 5)  # NPS 45 -> a rise
    assert RULE.dropped(current, baseline) is False
    assert RULE.dropped(Counts(41, 39, 20), baseline) is False  # NPS 21: 9 points down


def test_exactly_the_threshold_fires() -> None:
    assert RULE.dropped(Counts(40, 40, 20), Counts(50, 30, 20)) is True  # 30 -> 20


@pytest.mark.parametrize(("cur_n", "base_n"), [(29, 100), (100, 29), (0, 0)])
def test_too_few_responses_means_no_verdict(cur_n: int, base_n: int) -> None:
    assert RULE.dropped(Counts(0, 0, cur_n), Counts(base_n, 0, 0)) is None


@pytest.mark.parametrize(
    ("firing", "dropped", "expected"),
    [
        (False, True, Transition.FIRE),
        (True, True, Transition.NONE),
        (True, False, Transition.RESOLVE),
        (False, False, Transition.NONE),
        (True, None, Transition.NONE),
        (False, None, Transition.NONE),
    ],
)
def test_transitions(firing: bool, dropped: bool | None, expected: Transition) -> None:
    assert transition(firing, dropped) is expected


def test_alert_ids_are_deterministic() -> None:
    at = datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert alert_id("all", at) == alert_id("all", at)
    assert alert_id("all", at) != alert_id("channel:web", at)
