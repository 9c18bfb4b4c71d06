from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring_service.domain import ScoredResponse, daily_deltas, first_occurrences, parse_segment, segments_of
from shared.nps import Counts


def response(rid: str = "r1", score: int = 9, day: date = date(2026, 11, 24), **kw: object) -> ScoredResponse:
    return ScoredResponse(
        response_id=rid,
        respondent_id=str(kw.get("respondent_id", "u1")),
        score=score,
        day=day,
        channel=kw.get("channel"),  # type: ignore[arg-type]
        survey_id=kw.get("survey_id"),  # type: ignore[arg-type]
        attributes=kw.get("attributes", {}),  # type: ignore[arg-type]
    )


def test_segments_of_a_response() -> None:
    r = response(channel="email", survey_id="q4", attributes={"region": "eu", "product": "atlas"})
    assert segments_of(r) == ["all", "channel:email", "survey_id:q4", "product:atlas", "region:eu"]


def test_a_response_without_dimensions_counts_overall_only() -> None:
    assert segments_of(response()) == ["all"]


@pytest.mark.parametrize(
    ("text", "key"), [("all", "all"), ("channel:email", "channel:email"), ("product:a:b", "product:a:b")]
)
def test_parse_segment(text: str, key: str) -> None:
    assert parse_segment(text) == key


@pytest.mark.parametrize("text", ["", "channel", "channel:", ":email", "Channel:email", "9x:y", "a b:c"])
def test_parse_segment_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_segment(text)


def test_daily_deltas_pre_aggregate_per_segment_and_day() -> None:
    d1, d2 = date(2026, 11, 23), date(2026, 11, 24)
    deltas = daily_deltas(
        [
            response("a", 10, d1, channel="web"),
            response("b", 3, d1, channel="web"),
            response("c", 8, d2, channel="sms"),
        ]
    )
    assert deltas[("all", d1)] == Counts(1, 0, 1)
    assert deltas[("channel:web", d1)] == Counts(1, 0, 1)
    assert deltas[("all", d2)] == Counts(0, 1, 0)
    assert deltas[("channel:sms", d2)] == Counts(0, 1, 0)
    assert len(deltas) == 4


def test_first_occurrences_keeps_the_first_of_each_id() -> None:
    rows = [response("a", 10), response("b", 3), response("a", 0)]
    assert [(r.response_id, r.score) for r in first_occurrences(rows)] == [("a", 10), ("b", 3)]


@given(st.lists(st.tuples(st.integers(0, 10), st.sampled_from(["web", "sms", None]), st.integers(0, 3)), max_size=60))
def test_deltas_sum_to_the_overall_counts(rows: list[tuple[int, str | None, int]]) -> None:
    responses = [response(str(i), s, date(2026, 11, 1 + d), channel=c) for i, (s, c, d) in enumerate(rows)]
    deltas = daily_deltas(responses)
    overall = sum((v for (seg, _), v in deltas.items() if seg == "all"), Counts())
    assert overall == Counts.from_scores([s for s, _, _ in rows])
    by_channel = sum((v for (seg, _), v in deltas.items() if seg.startswith("channel:")), Counts())
    assert by_channel == Counts.from_scores([s for s, c, _ in rows if c is not None])
