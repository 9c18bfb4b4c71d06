import json
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from shared.consumer import describe_invalid
from shared.events import (
    DayCounts,
    ResponseSubmitted,
    ScoreChanged,
    WindowCounts,
    alert_events,
    response_events,
    score_events,
)
from tests.helpers import fired_alert

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def submitted(**kw: object) -> ResponseSubmitted:
    fields: dict[str, object] = {
        "response_id": "r1",
        "respondent_id": "u1",
        "score": 9,
        "answered_at": NOW,
        "submitted_at": NOW,
    }
    fields.update(kw)
    return ResponseSubmitted.model_validate(fields)


def test_response_event_round_trips_through_bytes() -> None:
    event = submitted(comment="great", attributes={"plan": "pro"})
    assert response_events.validate_json(event.to_bytes()) == event


def test_decoding_rejects_a_bucketed_or_fractional_score() -> None:
    raw = submitted().model_dump(mode="json")
    for bad in (11, 6.5, "7", True):
        with pytest.raises(ValidationError):
            response_events.validate_json(json.dumps({**raw, "score": bad}))


def test_decoding_rejects_an_unknown_type() -> None:
    raw = submitted().model_dump(mode="json") | {"type": "ResponseExploded"}
    with pytest.raises(ValidationError):
        response_events.validate_python(raw)


def test_score_and_alert_unions_decode_their_members() -> None:
    counts = WindowCounts(
        first_day=date(2026, 11, 18), last_day=date(2026, 11, 24), promoters=1, passives=0, detractors=2
    )
    changed = ScoreChanged(segment="all", as_of=date(2026, 11, 24), current=counts, baseline=counts, computed_at=NOW)
    assert score_events.validate_json(changed.to_bytes()) == changed  # without `daily`: as version 1 began
    with_days = changed.model_copy(
        update={"daily": [DayCounts(day=date(2026, 11, 24), promoters=1, passives=0, detractors=2)]}
    )
    assert score_events.validate_json(with_days.to_bytes()) == with_days
    drop = fired_alert("al_1", "all", NOW)
    assert alert_events.validate_json(drop.to_bytes()) == drop


def test_dead_letter_reasons_carry_no_input_values() -> None:
    raw = submitted(comment="my phone is 555-0199", email="jane@example.com").model_dump(mode="json")
    raw["score"] = 11
    with pytest.raises(ValidationError) as info:
        response_events.validate_python(raw)
    reason = describe_invalid(info.value)
    assert "score" in reason
    assert "555-0199" not in reason and "jane@example.com" not in reason and "11" not in reason


def test_the_fast_encoder_takes_every_field_of_the_contract_in_its_order() -> None:
    import inspect

    from shared.events import encode_submitted

    constants = {"schema_version", "type"}
    assert list(inspect.signature(encode_submitted).parameters) == [
        name for name in ResponseSubmitted.model_fields if name not in constants
    ]


def test_retry_logs_name_the_failure_without_the_values_the_database_quoted() -> None:
    import sqlalchemy as sa

    from shared.db import describe_failure

    class UniqueViolation(Exception):
        sqlstate = "23505"

    exc = sa.exc.IntegrityError(
        "INSERT INTO t (email) VALUES (:e)",
        {"e": "jane@example.com"},
        UniqueViolation("duplicate key value; Key (email)=(jane@example.com) already exists"),
    )
    described = describe_failure(exc)
    assert described == "IntegrityError (UniqueViolation, SQLSTATE 23505)"
    assert describe_failure(TimeoutError("after 0.9 s")) == "TimeoutError"


def test_a_database_starting_up_or_shutting_down_is_transient_not_a_bug() -> None:
    import sqlalchemy as sa

    from shared.consumer import is_transient

    class AdapterError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__("the database system is not yet accepting connections")
            self.sqlstate = sqlstate

    for state in ("57P03", "57P01", "08006"):
        assert is_transient(sa.exc.DBAPIError("SELECT 1", {}, AdapterError(state)))
    assert not is_transient(sa.exc.DBAPIError("SELECT 1", {}, AdapterError("23505")))  # a unique violation is a bug
    for state in ("40P01", "40001"):  # a deadlock broken by aborting this transaction: run it again
        assert is_transient(sa.exc.DBAPIError("UPDATE", {}, AdapterError(state)))
    assert not is_transient(sa.exc.DBAPIError("UPDATE", {}, AdapterError("40002")))  # a constraint at commit
