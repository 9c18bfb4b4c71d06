import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pydantic_core
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest_service.domain import (
    FINGERPRINTED,
    InvalidResponse,
    Limits,
    ReviseResponse,
    SubmitResponse,
    check,
    fingerprint,
    submission,
)
from shared.events import ResponseSubmitted, response_events
from tests.helpers import INVALID_BASICS

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
SKEW = Limits(max_future_skew=timedelta(minutes=5), max_age=timedelta(days=1095))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        *INVALID_BASICS,
        ({"respondent_id": "", "score": 7}, "respondent_id"),
        ({"respondent_id": 42, "score": 7}, "respondent_id"),
        ({"respondent_id": "u", "score": 7, "answered_at": "yesterday"}, "answered_at"),
        ({"respondent_id": "u", "score": 7, "answered_at": "2026-11-24T10:00:00"}, "answered_at"),  # no zone
        ({"respondent_id": "u", "score": 7, "answered_at": 1700000000}, "answered_at"),
        ({"respondent_id": "u", "score": 7, "attributes": {"Bad-Key": "x"}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "attributes": {"plan": 3}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "comment": "x" * 5001}, "comment"),
        ({"respondent_id": "u", "score": 7, "nps": 7}, "nps"),  # unknown fields are rejected
        ({"respondent_id": "x" * 129, "score": 7}, "respondent_id"),
        ({"respondent_id": "u", "score": 7, "survey_id": "s" * 65}, "survey_id"),
        ({"respondent_id": "u", "score": 7, "channel": "c" * 65}, "channel"),
        ({"respondent_id": "u", "score": 7, "response_id": ""}, "response_id"),
        ({"respondent_id": "u", "score": 7, "attributes": {f"k{i}": "v" for i in range(33)}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "attributes": {"plan": "p" * 257}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "attributes": {"k" * 41: "v"}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "email": "e" * 255}, "email"),
        ({"respondent_id": "u", "score": 7, "attributes": ["plan"]}, "attributes"),
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


def test_answers_older_than_the_horizon_are_refused() -> None:
    old = SubmitResponse.model_validate(
        {"respondent_id": "u", "score": 7, "answered_at": (NOW - timedelta(days=1096)).isoformat()}
    )
    with pytest.raises(InvalidResponse, match="1095-day horizon"):
        check(old, NOW, SKEW)
    check(
        SubmitResponse.model_validate(
            {"respondent_id": "u", "score": 7, "answered_at": (NOW - timedelta(days=1094)).isoformat()}
        ),
        NOW,
        SKEW,
    )


def test_the_fingerprint_covers_every_field_but_the_id() -> None:
    # respondent_hash proves who answers (publishable keys); it is not part of what was answered.
    assert set(FINGERPRINTED) == set(SubmitResponse.model_fields) - {"response_id", "respondent_hash", "invitation_id"}


def test_the_fingerprint_of_a_body_never_changes_across_releases() -> None:
    """Stored fingerprints outlive a deploy: a retry sent across an upgrade must match the one its
    first attempt stored. These values were computed by the first release's definition."""
    full = {
        "response_id": "r1",
        "respondent_id": "u-7",
        "score": 9,
        "comment": 'fast "checkout" ü',
        "channel": "web",
        "survey_id": "q4",
        "answered_at": "2026-06-01T10:00:00+02:00",
        "attributes": {"region": "eu", "plan": "pro"},
        "email": "a@example.com",
    }
    assert fingerprint(SubmitResponse.model_validate(full)) == (
        "c884109fc54070a50e5dd5261ae3755c25399bd215f42a5f319a65ea5c08391d"
    )
    assert fingerprint(SubmitResponse.model_validate({"respondent_id": "u", "score": 0})) == (
        "e92294dbaad64627ae7a1d2f1ff7a0b185ce8ec174b851b132cd4c984465e403"
    )


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
# What survives validation, and what a comment may hold besides (line breaks and tabs).
PLAIN_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
COMMENT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\r\t"), max_size=30)
# A timestamp as a client sends it (JSON, any offset to the minute, with or without microseconds):
# parsed by pydantic, it carries pydantic-core's own tzinfo, as it does in ingest.
OFFSET = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
STAMP = st.builds(
    lambda d, tz, us: d.replace(tzinfo=tz, microsecond=us if us is not None else 0).isoformat(),
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30)),
    OFFSET,
    st.none() | st.integers(0, 999_999),
)
BODIES = st.fixed_dictionaries(
    {"respondent_id": PLAIN_TEXT, "score": st.integers(0, 10)},
    optional={
        "comment": st.none() | COMMENT,
        "survey_id": st.none() | PLAIN_TEXT,
        "channel": st.none() | PLAIN_TEXT,
        "answered_at": st.none() | STAMP,
        "attributes": st.dictionaries(PLAIN_TEXT, PLAIN_TEXT, max_size=4),
        "email": st.none() | st.just("a@example.com"),
    },
)


@given(
    respondent=TEXT,
    score=st.integers(0, 10),
    comment=st.none() | TEXT,
    survey=st.none() | TEXT.filter(str.isalnum),
    channel=st.none() | TEXT.filter(str.isalnum),
    answered=st.none() | st.datetimes(timezones=st.just(UTC)),
    attributes=st.dictionaries(TEXT.filter(str.isalnum), TEXT, max_size=4),
    email=st.none() | st.just("a@example.com"),
)
def test_the_fingerprint_is_its_definition_over_every_field_in_order(
    respondent: str, score: int, comment: str | None, survey: str | None, channel: str | None,
    answered: datetime | None, attributes: dict[str, str], email: str | None,
) -> None:  # fmt: skip
    """fingerprint() writes the fields out for speed; it must equal the definition: every field of
    FINGERPRINTED in order, the attributes sorted, as pydantic-core's JSON, SHA-256."""
    body = {"respondent_id": respondent, "score": score, "comment": comment, "survey_id": survey,
            "channel": channel, "answered_at": answered, "attributes": attributes, "email": email}  # fmt: skip
    try:
        command = SubmitResponse.model_validate(body)
    except ValidationError:
        return  # not a body ingest would fingerprint
    assert fingerprint(command) == defined_fingerprint(command)


@given(body=BODIES)
def test_the_fingerprint_of_any_body_as_sent_is_its_definition(body: dict[str, object]) -> None:
    """The same over bodies parsed from JSON, as ingest parses them: any text, any offset."""
    try:
        command = SubmitResponse.model_validate_json(json.dumps(body))
    except ValidationError:
        return  # not a body ingest would fingerprint (a reserved attribute name, say)
    assert fingerprint(command) == defined_fingerprint(command)


def defined_fingerprint(command: SubmitResponse) -> str:
    """The fingerprint's definition: every field of FINGERPRINTED in order, the attributes sorted,
    as pydantic-core's JSON, SHA-256."""
    canonical = [getattr(command, name) for name in FINGERPRINTED]
    canonical[FINGERPRINTED.index("attributes")] = sorted(command.attributes.items())
    return hashlib.sha256(pydantic_core.to_json(canonical)).hexdigest()


def test_fingerprint_tells_a_retry_from_a_different_body() -> None:
    body = {"respondent_id": "u", "score": 7, "comment": "ok", "attributes": {"a": "1", "b": "2"}}
    same = {"attributes": {"b": "2", "a": "1"}, "comment": "ok", "score": 7, "respondent_id": "u"}
    first = fingerprint(SubmitResponse.model_validate({**body, "response_id": "r1"}))
    assert first == fingerprint(SubmitResponse.model_validate({**same, "response_id": "r1"}))
    assert first != fingerprint(SubmitResponse.model_validate({**body, "response_id": "r1", "score": 8}))
    assert first != fingerprint(SubmitResponse.model_validate({**body, "response_id": "r1", "comment": "ok!"}))
    other_value = {**body, "response_id": "r1", "attributes": {"a": "1", "b": "3"}}
    assert first != fingerprint(SubmitResponse.model_validate(other_value))
    assert first != fingerprint(SubmitResponse.model_validate({**body, "response_id": "r1", "attributes": {"a": "1"}}))


def test_a_revision_replaces_score_comment_and_attributes_only() -> None:
    assert ReviseResponse.model_validate({"score": 9}).attributes == {}
    for bad in ({"score": 11}, {"score": 9, "respondent_id": "u"}, {"score": 9, "channel": "web"}, {}):
        with pytest.raises(ValidationError):
            ReviseResponse.model_validate(bad)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"respondent_id": "u", "score": 7, "channel": "web\x00"}, "channel"),
        ({"respondent_id": "u\x1b[31m", "score": 7}, "respondent_id"),
        ({"respondent_id": "u", "score": 7, "survey_id": "q\n4"}, "survey_id"),
        ({"respondent_id": "u", "score": 7, "attributes": {"plan": "pro\x7f"}}, "attributes"),
        ({"respondent_id": "u", "score": 7, "comment": "nul \x00 inside"}, "comment"),
        ({"respondent_id": "u", "score": 7, "comment": "lone \udab8 surrogate"}, "comment"),
        ({"respondent_id": "u", "score": 7, "response_id": "r\x00"}, "response_id"),
    ],
)
def test_control_characters_and_invalid_unicode_are_rejected(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SubmitResponse.model_validate(body)
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_comments_keep_their_line_breaks_and_tabs() -> None:
    body = SubmitResponse.model_validate({"respondent_id": "u", "score": 3, "comment": "line one\n\tline two\r\n"})
    assert body.comment == "line one\n\tline two\r\n"


@pytest.mark.parametrize(
    "body",
    [
        {"respondent_id": "u", "score": 7},
        {
            "respondent_id": "u-ü",
            "score": 10,
            "comment": 'said "hi"\nthen left',
            "survey_id": "q4",
            "channel": "web",
            "answered_at": "2026-11-20T09:30:00+02:00",
            "attributes": {"region": "eu", "product": "atlas"},
            "email": "a@example.com",
        },
    ],
)
def test_the_fast_encoding_is_the_event_contract_byte_for_byte(body: dict[str, object]) -> None:
    assert_encoded_as_the_contract(SubmitResponse.model_validate({**body, "response_id": "r1"}))


@given(body=BODIES)
def test_the_fast_encoding_of_any_body_as_sent_is_the_event_contract(body: dict[str, object]) -> None:
    """Over bodies parsed from JSON as ingest parses them: any text (escapes, any Unicode), any
    offset, microseconds or none."""
    try:
        command = SubmitResponse.model_validate_json(json.dumps({**body, "response_id": "r1"}))
    except ValidationError:
        return  # not a body ingest would publish
    assert_encoded_as_the_contract(command)


def assert_encoded_as_the_contract(command: SubmitResponse) -> None:
    event = ResponseSubmitted(  # the contract, built the plain way
        response_id="r1",
        respondent_id=command.respondent_id,
        score=command.score,
        comment=command.comment,
        survey_id=command.survey_id,
        channel=command.channel,
        answered_at=command.answered_at or NOW,
        attributes=command.attributes,
        email=command.email,
        submitted_at=NOW,
        source="app",
    )
    item = submission(command, NOW, "app")
    assert item.event == event.to_bytes()
    assert response_events.validate_json(item.event) == event
    assert (item.response_id, item.key, item.answered_at) == ("r1", event.respondent_id.encode(), event.answered_at)
