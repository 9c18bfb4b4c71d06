"""The consumers' struct decoder (shared/wire.py) against the contract's models: for any input,
both accept it with the same values (offsets included) or both refuse it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared import wire
from shared.events import (
    InvitationSent,
    RespondentErased,
    ResponseRevised,
    ResponseSubmitted,
    encode_submitted,
    invitation_events,
    response_events,
)
from shared.wire import Erased, Invited, Revised, Submitted, decode_rate_event, decode_response, wire_of
from tests.scale import examples

NOW = datetime(2026, 11, 24, 12, 30, 15, 123456, tzinfo=UTC)


def contract(raw: bytes) -> dict[str, Any] | None:
    """What the models make of `raw` (as a struct, normalised), or None when they refuse it."""
    try:
        return normalised(wire_of(response_events.validate_json(raw)))
    except ValidationError:
        return None


def fast(raw: bytes) -> dict[str, Any] | None:
    try:
        return normalised(decode_response(raw))
    except ValidationError:
        return None


def normalised(event: wire.ResponseWire) -> dict[str, Any]:
    """Field values with each time as its ISO text, so an offset that differs is a difference."""
    fields = msgspec.structs.asdict(event)
    return {"class": type(event).__name__} | {
        k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()
    }


# --- generated inputs: valid events, and every field pushed to and past its edges ---

offsets = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "-05:30", "+0100", "+23:59", "+24:00", "+01", ""])
fractions = st.one_of(st.just(""), st.integers(0, 12).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)))
times = st.builds(
    lambda d, sep, h, m, s, frac, off: f"{d:%Y-%m-%d}{sep}{h:02d}:{m:02d}:{s:02d}{'.' + frac if frac else ''}{off}",
    st.dates(),
    st.sampled_from(["T", "t", " ", "_"]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    fractions,
    offsets,
)
stamps = st.one_of(
    times,
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.integers(-10, 2_000_000_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.none(),
)
texts = st.one_of(st.text(max_size=20), st.none(), st.integers(), st.booleans())
scores = st.one_of(
    st.sampled_from([-1, 0, 10, 11]), st.integers(), st.floats(-1, 11), st.booleans(), st.sampled_from(["7", 7.0, None])
)
attributes = st.one_of(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.none(), st.text(max_size=3)), max_size=3),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)
MISSING = object()


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value, or the field left out."""
    return st.one_of(values, st.just(MISSING))


edges = {
    "schema_version": maybe(st.sampled_from([1, 2, 0, "1", 1.0, None])),
    "response_id": maybe(texts),
    "respondent_id": maybe(texts),
    "score": maybe(scores),
    "comment": maybe(texts),
    "survey_id": maybe(texts),
    "channel": maybe(texts),
    "answered_at": maybe(stamps),
    "attributes": maybe(attributes),
    "source": maybe(texts),
    "email": maybe(texts),
    "submitted_at": maybe(stamps),
    "revised_at": maybe(stamps),
    "requested_at": maybe(stamps),
    "erasure_id": maybe(texts),
    "version": maybe(st.one_of(st.sampled_from([0, 1, 2, "3", 2.0, 2.5, True, None]), st.integers())),
    "type": maybe(st.sampled_from(["ResponseSubmitted", "RespondentErased", "ResponseExploded", "responserevised", 1])),
    "unknown_field": maybe(st.one_of(texts, st.lists(st.integers(), max_size=2))),
}
valid_times = st.one_of(
    st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])
    ).map(lambda d: d.isoformat()),
    times.filter(lambda t: contract_time(t) is not None),
)
optional = st.one_of(st.text(max_size=20), st.none())
response = {
    "response_id": st.text(max_size=20), "respondent_id": st.text(max_size=20), "score": st.integers(0, 10),
    "comment": optional, "survey_id": optional, "channel": optional, "answered_at": valid_times,
    "attributes": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3), "source": optional,
}  # fmt: skip
valid = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("ResponseSubmitted"), **response, "email": optional, "submitted_at": valid_times}
    ),
    st.fixed_dictionaries(
        {"type": st.just("ResponseRevised"), **response, "version": st.integers(2, 9), "revised_at": valid_times}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("RespondentErased"),
            "erasure_id": st.text(max_size=20),
            "respondent_id": st.text(max_size=20),
            "requested_at": valid_times,
            "source": optional,
        }
    ),
)
# A valid event with none, one or two of its fields (or a field it does not have) pushed to an edge.
bodies = st.builds(
    lambda body, changes: body | changes,
    valid,
    st.dictionaries(st.sampled_from(sorted(edges)), st.none(), max_size=2).flatmap(
        lambda picked: st.fixed_dictionaries({name: edges[name] for name in picked})
    ),
)


def contract_time(text: str) -> datetime | None:
    try:
        return response_events.validate_python(
            {"type": "RespondentErased", "erasure_id": "e", "respondent_id": "p", "requested_at": text}
        ).requested_at
    except ValidationError:
        return None


def encoded(body: dict[str, Any], ascii_only: bool) -> bytes:
    return json.dumps({k: v for k, v in body.items() if v is not MISSING}, ensure_ascii=ascii_only).encode()


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, ascii_only=st.booleans())
@example(body={"type": "ResponseSubmitted", "response_id": "r", "respondent_id": "p", "score": 3,
               "answered_at": "2026-01-01T00:00:00.9999999Z", "submitted_at": "2026-01-01T00:00:00Z"},
         ascii_only=True)  # fmt: skip
@example(body={"type": "ResponseSubmitted", "response_id": "r", "respondent_id": "p", "score": 3,
               "answered_at": 1_700_000_000, "submitted_at": "2026-01-01T00:00+01:00"},
         ascii_only=True)  # fmt: skip
def test_the_struct_decoder_agrees_with_the_contract_on_any_input(body: dict[str, Any], ascii_only: bool) -> None:
    raw = encoded(body, ascii_only)
    assert fast(raw) == contract(raw)


EDGES: dict[str, list[Any]] = {
    "score": [-1, 0, 10, 11, 7.0, 6.5, "7", True, None, 2**70],
    "version": [0, 1, 2, "3", 2.0, True, None, 2**70],
    "schema_version": [0, 1, 2, "1", 1.0, None],
    "response_id": ["", "é", 1, None, ["r"]],
    "comment": ["", None, 3, {"a": 1}],
    "attributes": [{}, {"": ""}, {"a": 1}, {"a": None}, None, ["a"]],
    "type": ["ResponseSubmitted", "ResponseRevised", "RespondentErased", "responsesubmitted", "", None, 1],
    "answered_at": [
        "2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "2026-01-01 00:00:00+01:00", "2026-01-01T00:00Z",
        "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00,5Z", "2026-01-01T24:00:00Z", "2026-12-31T23:59:60Z",
        "2026-02-30T00:00:00Z", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+0130", "20260101T000000Z",
        "2026-01-01", 1_700_000_000, 1.7e9, "1700000000", None,
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"), [(field, value) for field, values in EDGES.items() for value in values], ids=repr
)
@pytest.mark.parametrize("kind", ["ResponseSubmitted", "ResponseRevised", "RespondentErased"])
def test_the_struct_decoder_agrees_at_each_fields_edges(kind: str, field: str, value: Any) -> None:
    time = "2026-01-01T00:00:00Z"
    base: dict[str, Any] = {"type": kind, "respondent_id": "p", "source": None}
    if kind == "RespondentErased":
        base |= {"erasure_id": "e", "requested_at": value if field == "answered_at" else time}
    else:
        base |= {"response_id": "r", "score": 3, "answered_at": time, "attributes": {"a": "b"}, "comment": "c"}
        base |= {"submitted_at": time} if kind == "ResponseSubmitted" else {"version": 2, "revised_at": time}
    raw = json.dumps(base | {field: value}).encode()
    assert fast(raw) == contract(raw)


@given(
    raw=st.one_of(
        st.binary(max_size=60),
        st.builds(lambda b, cut: b[:cut], st.just(encode_submitted(
            response_id="r", respondent_id="p", score=3, comment="é", survey_id=None, channel=None, answered_at=NOW,
            attributes={}, email=None, submitted_at=NOW, source=None)), st.integers(0, 300)),
    )
)  # fmt: skip
def test_the_struct_decoder_agrees_on_bytes_that_are_not_json(raw: bytes) -> None:
    assert fast(raw) == contract(raw)


def submitted_bytes(**kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "response_id": "r1", "respondent_id": "u1", "score": 9, "comment": "quick", "survey_id": "s", "channel": "web",
        "answered_at": NOW, "attributes": {"plan": "pro"}, "email": "a@example.com", "submitted_at": NOW,
        "source": "app",
    }  # fmt: skip
    return encode_submitted(**(fields | kw))


def test_every_event_type_decodes_to_its_struct_with_every_field() -> None:
    events = [
        ResponseSubmitted.model_validate_json(submitted_bytes()),
        ResponseRevised(
            response_id="r1", respondent_id="u1", version=3, score=2, comment=None, answered_at=NOW,
            attributes={"a": "b"}, revised_at=NOW + timedelta(hours=1), source="app",
        ),
        RespondentErased(erasure_id="e1", respondent_id="u1", requested_at=NOW.astimezone(timezone(timedelta(hours=2)))),
    ]  # fmt: skip
    for event, kind in zip(events, (Submitted, Revised, Erased), strict=True):
        got = decode_response(event.to_bytes())
        assert type(got) is kind
        assert normalised(got) == normalised(wire_of(event))
        assert set(msgspec.structs.asdict(got)) == set(type(event).model_fields) - {"type"}  # no field left out


def test_the_fast_path_is_taken_for_what_ingest_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refuses:
        def validate_json(self, raw: bytes) -> None:
            raise AssertionError("the model decoded an event the structs should have")

    monkeypatch.setattr(wire, "response_events", Refuses())
    assert decode_response(submitted_bytes()).score == 9
    with pytest.raises(AssertionError):  # a time with 7 fractional digits goes to the model
        decode_response(submitted_bytes().replace(b'15.123456Z"', b'15.1234567Z"', 1))


def test_what_only_the_contract_accepts_is_still_accepted_and_what_it_refuses_is_refused_with_its_reason() -> None:
    raw = json.loads(submitted_bytes())
    as_number = decode_response(json.dumps(raw | {"answered_at": 1_700_000_000}).encode())  # msgspec refuses numbers
    assert as_number.answered_at == datetime.fromtimestamp(1_700_000_000, UTC)
    seven = decode_response(json.dumps(raw | {"answered_at": "2026-01-01T00:00:00.9999999Z"}).encode())
    assert seven.answered_at.microsecond == 999_999  # truncated, as the contract does, not rounded up
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        decode_response(json.dumps(raw | {"score": 11}).encode())


def test_the_structs_have_the_contracts_fields_in_its_order() -> None:
    for model, struct in ((ResponseSubmitted, Submitted), (ResponseRevised, Revised), (RespondentErased, Erased)):
        assert list(struct.__struct_fields__) == [f for f in model.model_fields if f != "type"]
        assert struct.__struct_config__.tag == model.model_fields["type"].default


def test_the_documented_examples_decode_the_same() -> None:
    text = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    found = 0
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        if '"type": "Response' in block or '"type": "RespondentErased"' in block:
            raw = block.encode()
            assert fast(raw) == contract(raw) and fast(raw) is not None
            found += 1
    assert found >= 3


def test_the_rate_consumer_decodes_both_topics_as_the_contracts_do() -> None:
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    invited = InvitationSent(invitation_id="i", respondent_id="p", survey_id="q", channel="email", invited_at=at,
                             attributes={"plan": "pro"}, how="shown", recorded_at=at, source="web")  # fmt: skip
    fast = decode_rate_event(invited.to_bytes())
    assert isinstance(fast, Invited)
    assert {f: getattr(fast, f) for f in InvitationSent.model_fields if f != "type"} == invited.model_dump(
        exclude={"type"}
    )
    # A seventh fractional digit goes the contract's way (truncated), through the model.
    slow = decode_rate_event(invited.to_bytes().replace(b'09:00:00Z"', b'09:00:00.1234567Z"', 1))
    model = invitation_events.validate_json(invited.to_bytes().replace(b'09:00:00Z"', b'09:00:00.1234567Z"', 1))
    assert isinstance(slow, Invited) and slow.invited_at == model.invited_at
    response = decode_rate_event(b'{"type":"ResponseSubmitted","response_id":"r","respondent_id":"p","score":3,'
                                 b'"answered_at":"2026-12-01T09:00:00Z","submitted_at":"2026-12-01T09:00:01Z"}')  # fmt: skip
    assert isinstance(response, Submitted) and response.invitation_id is None
    with pytest.raises(ValidationError):
        decode_rate_event(b'{"type":"InvitationSent","invitation_id":"i"}')


_ONE_PATTERN = re.compile(rb"\.\d{7}|\\u00[23]")  # what the model-only check was written as first


@given(st.lists(st.sampled_from([b".", b"1", b"\\", b"u", b"0", b"2", b"3", b"4", b"a", b'"']), max_size=40))
@example([b".", b"1"] + [b"2"] * 6)
@example([b"\\", b"u", b"0", b"0", b"3", b"a"])
def test_the_model_only_check_is_the_one_pattern(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert wire._model_only(raw) == (_ONE_PATTERN.search(raw) is not None)
