from datetime import UTC, datetime, timedelta

import pytest

from followup_service.domain import followup_id, plan, route, ticket_id
from shared.events import ResponseSubmitted


@pytest.mark.parametrize(
    ("score", "kind"),
    [*((s, "ticket") for s in range(7)), (7, "education"), (8, "education"), (9, "referral"), (10, "referral")],
)
def test_every_score_routes_to_exactly_one_follow_up(score: int, kind: str) -> None:
    assert route(score) == kind


def test_ids_are_stable_per_response_and_distinct_across_responses() -> None:
    assert followup_id("r1") == followup_id("r1")
    assert ticket_id("r1") == ticket_id("r1")
    assert followup_id("r1") != followup_id("r2")
    assert ticket_id("r1") != ticket_id("r2")
    assert ticket_id("r1").startswith("tk_") and followup_id("r1").startswith("fu_")


def test_only_detractors_get_a_ticket() -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)

    def planned(score: int) -> str | None:
        response = ResponseSubmitted(
            response_id=f"r{score}", respondent_id="u", score=score, answered_at=now, submitted_at=now
        )
        return plan(response, now).ticket_id

    assert planned(6) == ticket_id("r6")
    assert planned(7) is None
    assert planned(10) is None


def test_an_erased_respondent_is_never_contacted_for_what_they_said_before() -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    response = ResponseSubmitted(response_id="r", respondent_id="u", score=3, answered_at=now, submitted_at=now)
    assert plan(response, now, erased_at=None) is not None
    assert plan(response, now, erased_at=now) is None  # erased at the same moment: covered
    assert plan(response, now, erased_at=now + timedelta(seconds=1)) is None
    later = plan(response, now, erased_at=now - timedelta(seconds=1))  # spoke again after the erasure
    assert later is not None and later.ticket_id == ticket_id("r")
