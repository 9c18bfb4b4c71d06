from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from ingest_service.domain import InvalidResponse, SubmitResponse, check

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"respondent_id": "u", "score": 11}, "score"),
        ({"respondent_id": "u", "score": -1}, "score"),
        ({"respondent_id": "u", "score": 6.5}, "score"),
        ({"respondent_id": "u", "score": "7"}, "score"),
        ({"respondent_id": "u", "score": True}, "score"),
        ({"respondent_id": "u", "score": None}, "score"),
        ({"score": 7}, "respondent_id"),
        ({"respondent_id": "", "score": 7}, "respondent_id"),
        ({"respondent_id": 42, "score": 7}, "respondent_id"),
        ({"respondent_id": "u", "score": 7, "answered_at": "yesterday"}, "answered_at"),
        ({"respondent_id": "u", "score": 7, "answered_at": "2026-11-24T10:00:00"}, "answered_at"),  # no zone
        ({"respondent_id": "u", "score": 7, "answered_at": 1700000000}, "answered_at"),
        ({"respondent_id": "u", "score": 7, "attributes": {"Bad-Key": "x"}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "attributes": {"plan": 3}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "comment": "x" * 5001}, "comment"),
        ({"respondent_id": "u", "score": 7, "nps": 7}, "nps"),  # unknown fields are rejected
    ],
)
def test_invalid_bodies_name_the_failing_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SubmitResponse.model_validate(body)
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_a_full_valid_body() -> None:
    body = SubmitResponse.model_validate(
        {
            "respondent_id": "u1",
            "score": 0,
            "comment": "slow",
            "survey_id": "q4",
            "channel": "sms",
            "answered_at": "2026-11-24T09:00:00+01:00",
            "attributes": {"product": "atlas"},
            "response_id": "r1",
        }
    )
    assert body.score == 0
    assert body.answered_at == datetime(2026, 11, 24, 8, tzinfo=UTC)
    check(body, NOW, SKEW)  # no error


def test_future_timestamps_beyond_the_skew_are_refused() -> None:
    body = SubmitResponse.model_validate(
        {"respondent_id": "u", "score": 7, "answered_at": (NOW + timedelta(hours=1)).isoformat()}
    )
    with pytest.raises(InvalidResponse) as info:
        check(body, NOW, SKEW)
    assert info.value.field == "answered_at"
    within_skew = SubmitResponse.model_validate(
        {"respondent_id": "u", "score": 7, "answered_at": (NOW + timedelta(minutes=4)).isoformat()}
    )
    check(within_skew, NOW, SKEW)


@pytest.mark.parametrize("key", ["channel", "survey_id"])
def test_attributes_may_not_shadow_a_dimension(key: str) -> None:
    body = SubmitResponse.model_validate({"respondent_id": "u", "score": 7, "attributes": {key: "x"}})
    with pytest.raises(InvalidResponse) as info:
        check(body, NOW, SKEW)
    assert info.value.field == f"attributes.{key}"
