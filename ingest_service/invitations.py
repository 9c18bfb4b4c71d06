"""Who was asked: invitations an app's server sends (`POST /v1/invitations`) and prompts a widget
showed (`POST /v1/impressions`, `shown`, then `dismissed` if the person closed it: one invitation).
Ingest keeps one row per invitation_id (idempotency, and the prompt's "asked recently"), logs each
new or changed invitation's event for replay, and publishes it to nps.invitations.v1, where scoring
counts response rates (docs/collect.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from ingest_service.domain import (
    Attributes,
    Channel,
    Identifier,
    InvalidResponse,
    Limits,
    RespondentHash,
    SurveyId,
    Timestamp,
    check_attributes,
)
from ingest_service.publisher import Publisher, PublishFailed
from shared.events import How, InvitationSent

MAX_INVITATIONS = 1000

INVITATION_EXAMPLE: dict[str, Any] = {
    "invitation_id": "inv-2026-12-q4-1842",
    "respondent_id": "user-1842",
    "survey_id": "q4-relationship",
    "channel": "email",
    "invited_at": "2026-12-01T09:00:00Z",
    "attributes": {"product": "atlas", "region": "eu", "plan": "pro"},
}


class Invitation(BaseModel):
    """One person asked to answer a survey, as the app's server (or its mailer) records it."""

    model_config = ConfigDict(extra="forbid")

    invitation_id: Identifier = Field(description="Idempotency key: the same invitation again counts once.")
    respondent_id: Identifier
    survey_id: SurveyId = None
    channel: Channel = None
    invited_at: Timestamp = Field(description="When they were asked (RFC 3339 with a zone).")
    attributes: Attributes = Field(default_factory=dict)


class InvitationsIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"invitations": [dict(INVITATION_EXAMPLE)]}]}
    )

    invitations: list[Invitation] = Field(min_length=1, max_length=MAX_INVITATIONS)


class InvitationsOut(BaseModel):
    recorded: int = Field(description="invitations new to us (or a prompt's `dismissed` after its `shown`)")
    repeated: int = Field(description="invitations we already had with this same body: counted once")
    conflicts: list[str] = Field(description="invitation_ids already used with another body: not recorded")


class Impression(BaseModel):
    """The prompt was shown to a person, or they dismissed it (a widget posts both, with one id)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "impression_id": "0b6f4d2e-9a1c-4f3e-8d7a-2c5b1e9f0a34",
                    "action": "shown",
                    "respondent_id": "user-1842",
                    "respondent_hash": "<hex HMAC-SHA256 of respondent_id, from your server>",
                    "survey_id": "q4-relationship",
                    "attributes": {"plan": "pro"},
                }
            ]
        },
    )

    impression_id: Identifier = Field(
        description="Made by the client once per prompt it shows (a random UUID); the `dismissed` of that prompt "
        "carries the same id. A response may name it as its invitation_id."
    )
    action: Literal["shown", "dismissed"]
    respondent_id: Identifier
    respondent_hash: RespondentHash = Field(
        default=None, description="With a publishable key: as on POST /v1/responses."
    )
    survey_id: SurveyId = None
    channel: Channel = None
    attributes: Attributes = Field(default_factory=dict)


class ImpressionOut(BaseModel):
    invitation_id: str = Field(description="the impression_id: the invitation this prompt is")
    status: Literal["recorded", "repeated"]


class InvitationConflict(Exception):
    def __init__(self, invitation_id: str) -> None:
        super().__init__(invitation_id)
        self.invitation_id = invitation_id


@dataclass(frozen=True, slots=True)
class Asked:
    """An invitation the rules accepted: what ingest records of it, and its event."""

    invitation_id: str
    respondent_id: str
    survey_id: str | None
    how: How
    invited_at: datetime
    fingerprint: str
    event: bytes

    @property
    def key(self) -> bytes:
        return self.respondent_id.encode()  # one person's events in order, on either topic


_CANONICAL = msgspec.json.Encoder()


def asked(
    invitation_id: str,
    respondent_id: str,
    survey_id: str | None,
    channel: str | None,
    attributes: dict[str, str],
    how: How,
    invited_at: datetime,
    now: datetime,
    source: str,
) -> Asked:
    """The invitation and its event. Its fingerprint is every field but the id and `how`, and for a
    widget's prompt not its time either (the server's clock at each post): a `dismissed` is the same
    invitation as its `shown`, a retry the same as the first post."""
    attributes_sorted = sorted(attributes.items())
    when = invited_at if how == "invited" else None
    fingerprint = hashlib.sha256(
        _CANONICAL.encode((respondent_id, survey_id, channel, when, attributes_sorted))
    ).hexdigest()
    event = InvitationSent(
        invitation_id=invitation_id,
        respondent_id=respondent_id,
        survey_id=survey_id,
        channel=channel,
        invited_at=invited_at,
        attributes=attributes,
        how=how,
        recorded_at=now,
        source=source,
    ).to_bytes()
    return Asked(invitation_id, respondent_id, survey_id, how, invited_at, fingerprint, event)


def check_invitation(item: Invitation, index: int, now: datetime, limits: Limits) -> None:
    where = f"invitations.{index}"
    if item.invited_at > now + limits.max_future_skew:
        raise InvalidResponse(f"{where}.invited_at", "is in the future")
    if item.invited_at < now - limits.max_age:
        raise InvalidResponse(f"{where}.invited_at", f"is older than the {limits.max_age.days}-day horizon")
    try:
        check_attributes(item.attributes)
    except InvalidResponse as exc:
        raise InvalidResponse(f"{where}.{exc.field}", exc.problem) from exc


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a set of invitations found: by invitation_id."""

    new: frozenset[str]  # first seen, or a `dismissed` after its `shown`: logged for replay
    conflicts: frozenset[str]  # used before with another body: neither recorded nor published
    # A prompt's late `shown` after its `dismissed` (a retry that lost the race): not published again.
    behind: frozenset[str] = frozenset()


class InvitationStore(Protocol):
    """The port: record invitations (each id once), in one transaction with their logged events."""

    async def record_invitations(self, items: Sequence[Asked]) -> Recorded: ...

    async def invited_at(self, invitation_id: str) -> datetime | None: ...


class Invitations:
    """Records, then publishes: every accepted invitation of the request is published, new or
    repeated (an earlier attempt's publish may have failed; consumers keep an invitation_id once),
    so a client's retry after a 503 always reaches the topic."""

    def __init__(self, store: InvitationStore, publisher: Publisher, topic: str, limits: Limits) -> None:
        self.store = store
        self.publisher = publisher
        self.topic = topic
        self.limits = limits

    async def invite(self, body: InvitationsIn, now: datetime, source: str) -> InvitationsOut:
        for index, item in enumerate(body.invitations):
            check_invitation(item, index, now, self.limits)
        seen: dict[str, Asked] = {}
        for item in body.invitations:
            made = asked(
                item.invitation_id, item.respondent_id, item.survey_id, item.channel, item.attributes,
                "invited", item.invited_at, now, source,
            )  # fmt: skip
            earlier = seen.get(item.invitation_id)
            if earlier is not None and earlier.fingerprint != made.fingerprint:
                raise InvalidResponse(
                    "invitations", f"invitation_id {item.invitation_id!r} is given twice, differently"
                )
            seen[item.invitation_id] = made
        recorded = await self.store.record_invitations(list(seen.values()))
        await self._publish([a for a in seen.values() if a.invitation_id not in recorded.conflicts])
        return InvitationsOut(
            recorded=len(recorded.new),
            repeated=len(seen) - len(recorded.new) - len(recorded.conflicts),
            conflicts=sorted(recorded.conflicts),
        )

    async def impression(self, item: Impression, channel: str | None, now: datetime, source: str) -> ImpressionOut:
        check_attributes(item.attributes)
        # A prompt is asked when it was first shown: its `dismissed`, and any retry, carry that time,
        # so whichever of its events a consumer keeps first counts it on the same day.
        shown_at = await self.store.invited_at(item.impression_id) or now
        made = asked(
            item.impression_id, item.respondent_id, item.survey_id, channel, item.attributes, item.action, shown_at,
            now, source,
        )  # fmt: skip
        recorded = await self.store.record_invitations([made])
        if recorded.conflicts:
            raise InvitationConflict(item.impression_id)
        if not recorded.behind:
            await self._publish([made])
        return ImpressionOut(invitation_id=item.impression_id, status="recorded" if recorded.new else "repeated")

    async def _publish(self, items: Sequence[Asked]) -> None:
        if items:
            acked = await self.publisher.publish_many(self.topic, [(a.key, a.event) for a in items])
            if not all(acked):
                raise PublishFailed(f"{acked.count(False)} of {len(acked)} invitations not acknowledged")
