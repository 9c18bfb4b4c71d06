"""Follow-up's events are written without their models (followup_service/publisher.py): each must
decode with its model and encode back to the very same bytes, so the models stay the contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.publisher import outgoing, ticket_updated
from followup_service.routing.domain import FollowUp
from followup_service.routing.messages import Rendered
from followup_service.tickets.repository import TicketRow
from shared.events import ResponseRevised, ResponseSubmitted, followup_events, ticket_events
from shared.settings import Topics

TOPICS = Topics(namespace="t")
AT = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)
TEXT = st.none() | st.text(max_size=30)
TIMES = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))


def same_bytes_through_the_model(value: bytes, adapter: object) -> None:
    decoded = adapter.validate_json(value)  # type: ignore[attr-defined]
    assert decoded.to_bytes() == value


@given(
    score=st.integers(0, 10),
    comment=TEXT,
    channel=TEXT,
    survey=TEXT,
    rule=TEXT,
    code=st.none() | st.just("rabcdefghijklmnop"),
    message=st.none() | st.builds(Rendered, st.just("t"), st.just("en"), st.text(), st.text(), TEXT),
    answered=TIMES,
    opens=st.booleans(),
    revised=st.booleans(),
    arm=st.none() | st.sampled_from(["treated", "short"]),
    held_out=st.booleans(),
)
def test_follow_up_events_are_their_models_byte_for_byte(
    score: int, comment: str | None, channel: str | None, survey: str | None, rule: str | None,
    code: str | None, message: Rendered | None, answered: datetime, opens: bool, revised: bool,
    arm: str | None, held_out: bool,
) -> None:  # fmt: skip
    common = {"response_id": "r-1", "respondent_id": "ü-7", "score": score, "comment": comment, "channel": channel,
              "survey_id": survey, "answered_at": answered, "attributes": {"plan": "pro"}}  # fmt: skip
    response = (
        ResponseRevised(**common, version=2, revised_at=AT) if revised else ResponseSubmitted(**common, submitted_at=AT)
    )
    experiment = None if arm is None else "welcome-v2"
    if held_out:  # an experiment's held-out arm: FollowUpHeldOut alone
        followup = FollowUp("fu_1", "ticket", response, AT, None, 1, rule, "v1", status="held_out",
                            reason="experiment x: arm held_out", experiment_id="x", arm="held_out")  # fmt: skip
        [event] = outgoing(TOPICS, followup, opens)
        assert followup_events.validate_json(event.value).type == "FollowUpHeldOut"
        same_bytes_through_the_model(event.value, followup_events)
        return
    followup = FollowUp(
        "fu_1", "referral", response, AT, "tk_1", 1, rule, "v1", None, message, referral_code=code,
        experiment_id=experiment, arm=arm,
    )  # fmt: skip
    events = outgoing(TOPICS, followup, opens)
    assert followup_events.validate_json(events[0].value).arm == arm  # type: ignore[union-attr]
    assert len(events) == (2 if opens else 1)
    same_bytes_through_the_model(events[0].value, followup_events)
    assert events[0].key == "ü-7".encode()  # a person's follow-ups in order
    if opens:
        same_bytes_through_the_model(events[1].value, ticket_events)
        assert (events[1].topic, events[1].key) == (TOPICS.tickets, b"tk_1")  # with the ticket's updates


@pytest.mark.parametrize("erased", [False, True])
def test_ticket_updated_is_its_model_byte_for_byte(erased: bool) -> None:
    row = TicketRow(
        "tk_1", 3, "r-1", None if erased else "ü-7", "key", 2, None if erased else 'said "no" <b>', "resolved",
        "urgent", "ana", "score_revised", "web", None, AT, AT + timedelta(hours=1), AT, None, 7_200.0, None,
    )  # fmt: skip
    event = ticket_updated(TOPICS, row, {"status": "resolved", "note": "added"}, "support-desk")
    assert event.key == b"tk_1" and event.topic == TOPICS.tickets
    same_bytes_through_the_model(event.value, ticket_events)
