"""Ingest rules: the SubmitResponse command and the checks the schema cannot express.
Pure: the clock comes in as `now`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from shared.events import Score

RESERVED_ATTRIBUTES = frozenset({"channel", "survey_id"})


def _rfc3339_text(value: Any) -> Any:
    # Without this, pydantic would also take unix numbers ("1700000000"), which no survey tool
    # means as a timestamp here; RFC 3339 text (with its zone) is the contract.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string with a time zone, e.g. 2026-11-24T10:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
AttributeKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
AttributeValue = Annotated[str, StringConstraints(max_length=256)]


class SubmitResponse(BaseModel):
    """One survey response as a product app posts it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=False,
        json_schema_extra={
            "examples": [
                {
                    "response_id": "5d0c6a3e-web-42",
                    "respondent_id": "user-1842",
                    "score": 3,
                    "comment": "Checkout keeps timing out",
                    "survey_id": "q4-relationship",
                    "channel": "web",
                    "answered_at": "2026-11-24T09:30:00Z",
                    "attributes": {"product": "atlas", "region": "eu", "plan": "pro"},
                }
            ]
        },
    )

    response_id: Annotated[str | None, StringConstraints(min_length=1, max_length=128)] = Field(
        default=None,
        description="Idempotency key: a retry with the same id counts once. Generated if absent.",
    )
    respondent_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    score: Score = Field(description="An integer 0..10; anything else is rejected, never rounded.")
    comment: Annotated[str | None, StringConstraints(max_length=5000)] = None
    survey_id: Annotated[str | None, StringConstraints(min_length=1, max_length=64)] = None
    channel: Annotated[str | None, StringConstraints(min_length=1, max_length=64)] = None
    answered_at: Timestamp | None = Field(default=None, description="RFC 3339 with a zone; default: now.")
    attributes: dict[AttributeKey, AttributeValue] = Field(default_factory=dict, max_length=32)
    email: Annotated[str | None, StringConstraints(max_length=254)] = Field(
        default=None, description="Personal data: never logged above debug, never a metric label."
    )


class InvalidResponse(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def new_response_id() -> str:
    return str(uuid.uuid4())


def check(command: SubmitResponse, now: datetime, max_future_skew: timedelta) -> None:
    """What the schema cannot say: a timestamp in the future, an attribute that shadows a field."""
    if command.answered_at is not None and command.answered_at > now + max_future_skew:
        raise InvalidResponse("answered_at", "is in the future")
    for key in command.attributes:
        # `channel` and `survey_id` are dimensions of their own: an attribute of the same name
        # would count the response twice in that dimension.
        if key in RESERVED_ATTRIBUTES:
            raise InvalidResponse(f"attributes.{key}", f"'{key}' is a top-level field, not an attribute")
