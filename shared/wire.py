"""The responses topic's events as plain structures, for the consumers' hot path.

The pydantic models in shared/events.py stay the contract: the documentation, the JSON schemas
and what ingest writes are theirs. Decoding through them costs ~2.7 us an event, more than the
rest of scoring's per-event Python together, so the consumers of nps.responses (scoring, themes,
follow-up) decode with msgspec into the frozen structs below (~0.7 us), field for field the same.

Where the two parsers could disagree, the struct decoder steps aside: any input msgspec refuses
is decoded by the model (accepted exactly as the contract accepts it, or refused with the model's
own error for the dead-letter reason), and so is any input holding a run of 7 or more fractional
digits or an escaped ASCII punctuation or digit (msgspec rounds a time's 7th digit where pydantic
truncates it; escapes could hide such a run). tests/unit/test_wire.py holds the decoders equal
on every event type and on generated edge cases (hypothesis).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from pydantic import Field, TypeAdapter

from shared.events import (
    InvitationSent,
    RespondentErased,
    ResponseEvent,
    ResponseRevised,
    ResponseSubmitted,
    response_events,
)

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Score = Annotated[int, msgspec.Meta(ge=0, le=10)]


class Submitted(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type", tag="ResponseSubmitted"):
    """shared.events.ResponseSubmitted."""

    schema_version: Literal[1] = 1
    response_id: str
    respondent_id: str
    score: Score
    comment: str | None = None
    survey_id: str | None = None
    channel: str | None = None
    answered_at: AwareDatetime
    attributes: dict[str, str] = {}
    email: str | None = None
    submitted_at: AwareDatetime
    source: str | None = None
    identity: Literal["server", "verified", "anonymous"] = "server"  # events before it: a server's
    invitation_id: str | None = None


class Revised(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type", tag="ResponseRevised"):
    """shared.events.ResponseRevised."""

    schema_version: Literal[1] = 1
    response_id: str
    respondent_id: str
    version: Annotated[int, msgspec.Meta(ge=2)]
    score: Score
    comment: str | None = None
    survey_id: str | None = None
    channel: str | None = None
    answered_at: AwareDatetime
    attributes: dict[str, str] = {}
    revised_at: AwareDatetime
    source: str | None = None


class Erased(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type", tag="RespondentErased"):
    """shared.events.RespondentErased."""

    schema_version: Literal[1] = 1
    erasure_id: str
    respondent_id: str
    requested_at: AwareDatetime
    source: str | None = None


Response = Submitted | Revised
ResponseWire = Submitted | Revised | Erased

_DECODER: msgspec.json.Decoder[ResponseWire] = msgspec.json.Decoder(ResponseWire)
# Inputs the model decodes instead (see above); a false alarm (a comment quoting "v1.2345678") only
# costs that event the slower decoder.
_MORE_DIGITS = re.compile(rb"\.\d{7}")
_CONTROL_ESCAPE = re.compile(rb"\\u00[23]")


def _model_only(raw: bytes) -> bool:
    """Whether `raw` holds `.` and 7 digits or an escaped \\u002x/\\u003x (see above). Two searches
    with literal prefixes, the escape's only where `\\u00` occurs at all: 0.8 us an event where
    one alternation took 2.1 (each of scoring's events is asked)."""
    return (b"\\u00" in raw and _CONTROL_ESCAPE.search(raw) is not None) or _MORE_DIGITS.search(raw) is not None


_WIRE_OF = {ResponseSubmitted: Submitted, ResponseRevised: Revised, RespondentErased: Erased}


def decode_response(raw: bytes) -> ResponseWire:
    """An event of nps.responses, as the contract reads it; raises the model's ValidationError for
    one the contract refuses."""
    if not _model_only(raw):
        try:
            return _DECODER.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    return wire_of(response_events.validate_json(raw))


def wire_of(event: ResponseEvent) -> ResponseWire:
    """The struct of a decoded (or built) model: the slow path's answer, and the tests' events."""
    fields = {name: getattr(event, name) for name in type(event).model_fields if name != "type"}
    return _WIRE_OF[type(event)](**fields)  # type: ignore[no-any-return]


# --- nps.invitations.v1 with nps.responses.v1: what scoring's response-rate consumer reads ---


class Invited(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type", tag="InvitationSent"):
    """shared.events.InvitationSent."""

    schema_version: Literal[1] = 1
    invitation_id: str
    respondent_id: str
    survey_id: str | None = None
    channel: str | None = None
    invited_at: AwareDatetime
    attributes: dict[str, str] = {}
    how: Literal["invited", "shown", "dismissed"] = "invited"
    recorded_at: AwareDatetime
    source: str | None = None


RateWire = Submitted | Revised | Erased | Invited
_RATE_DECODER: msgspec.json.Decoder[RateWire] = msgspec.json.Decoder(RateWire)
_RATE_MODELS: TypeAdapter[ResponseEvent | InvitationSent] = TypeAdapter(
    Annotated[ResponseSubmitted | ResponseRevised | RespondentErased | InvitationSent, Field(discriminator="type")]
)


def decode_rate_event(raw: bytes) -> RateWire:
    """An event of either topic, as the contracts read it (the same fallback as decode_response)."""
    if not _model_only(raw):
        try:
            return _RATE_DECODER.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    event = _RATE_MODELS.validate_json(raw)
    if isinstance(event, InvitationSent):
        fields = {name: getattr(event, name) for name in InvitationSent.model_fields if name != "type"}
        return Invited(**fields)
    return wire_of(event)
