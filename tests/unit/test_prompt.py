"""GET /v1/prompt's pure rules: why not now, from when, and a sample that holds still."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ingest_service.prompt import Facts, PromptRules, decide, period_of, sampled

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
RULES = PromptRules(timedelta(days=90), timedelta(days=7), 30, {})


def test_each_reason_in_its_order_with_when_it_ends() -> None:
    everything = Facts(last_answer=NOW - timedelta(days=1), last_asked=NOW, opted_out=True, erased=True)
    assert decide(everything, NOW, RULES, "k", 1.0).reason == "opted_out"
    assert decide(Facts(erased=True, last_answer=NOW), NOW, RULES, "k", 1.0).reason == "erased"
    recent = decide(Facts(last_answer=NOW - timedelta(days=10), last_asked=NOW), NOW, RULES, "k", 1.0)
    assert (recent.show, recent.reason, recent.next_at) == (False, "surveyed_recently", NOW + timedelta(days=80))
    asked = decide(
        Facts(last_answer=NOW - timedelta(days=91), last_asked=NOW - timedelta(days=2)), NOW, RULES, "k", 1.0
    )
    assert (asked.reason, asked.next_at) == ("asked_recently", NOW + timedelta(days=5))
    assert decide(Facts(last_asked=NOW - timedelta(days=7)), NOW, RULES, "k", 1.0).show is True  # the gap is over
    assert decide(Facts(), NOW, RULES, "k", 1.0).model_dump() == {"show": True, "reason": None, "next_at": None}


def test_someone_out_of_the_sample_is_told_when_the_next_period_starts() -> None:
    out = next(k for k in (f"k{n}" for n in range(1000)) if not sampled(k, 0.5, period_of(NOW.date(), 30)))
    answer = decide(Facts(), NOW, RULES, out, 0.5)
    assert answer.reason == "not_sampled" and answer.next_at is not None
    assert NOW < answer.next_at <= NOW + timedelta(days=30) and answer.next_at.hour == 0
    assert period_of(answer.next_at.date(), 30) == period_of(NOW.date(), 30) + 1


@given(st.floats(min_value=0.05, max_value=0.95), st.integers(0, 10_000))
def test_a_sample_takes_about_its_share_and_everyone_at_one(share: float, period: int) -> None:
    people = [f"person-{n}" for n in range(2_000)]
    taken = sum(sampled(p, share, period) for p in people) / len(people)
    assert abs(taken - share) < 0.06  # ~5 standard errors at n = 2,000
    assert all(sampled(p, 1.0, period) for p in people[:50])
    assert [sampled(p, share, period) for p in people[:50]] == [sampled(p, share, period) for p in people[:50]]


def test_a_person_s_draw_changes_from_one_period_to_the_next() -> None:
    draws = [[sampled(f"p{n}", 0.5, period) for n in range(200)] for period in (1, 2)]
    assert draws[0] != draws[1]  # not the same half for ever
