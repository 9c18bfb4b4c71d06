"""Webhook subscriptions as the API and `nps webhooks` both manage them: the models they accept
and show, and the operations, each in one transaction with its audit entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_service import repository
from delivery_service.domain import EVENT_TYPES, EventType, Format, new_secret, url_problem
from shared import audit
from shared.sealed import Sealer

Kind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Segment = Annotated[str, StringConstraints(pattern=r"^(all|[a-z][a-z0-9_]{0,39}:[^\x00-\x1f\x7f]{1,256})$")]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Kind] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="follow-up kinds (FollowUpCreated and FollowUpHeldOut only): referral, ...",
    )
    segments: list[Segment] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="`all`, `channel:web`, `survey_id:q3`, or an alert's segment (`region:eu`); an event of any of them",
    )


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyUrl = Field(description="https:// endpoint (public address); it receives POSTs")
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    filters: Filters = Field(default_factory=Filters)
    format: Format = "standard"
    description: Description | None = None


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "paused"] | None = Field(
        default=None, description="pause (events are kept and sent on resume) or resume (also a disabled one)"
    )
    url: AnyUrl | None = None
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    filters: Filters | None = None
    format: Format | None = None
    description: Description | None = None
    rotate_secret: bool = Field(default=False, description="a new secret, returned once")
    overlap_s: int = Field(
        default=86_400,
        ge=0,
        le=30 * 86_400,
        description="with rotate_secret: how long the old secret still signs beside the new one",
    )

    @model_validator(mode="after")
    def _something(self) -> SubscriptionPatch:
        if not (self.model_fields_set - {"overlap_s"}):
            raise ValueError(
                "nothing to change: send status, url, events, filters, format, description or rotate_secret"
            )
        return self


class SubscriptionAnswer(BaseModel):
    subscription_id: str
    url: str
    description: str | None
    events: list[str]
    filters: Filters
    format: Format
    status: Literal["active", "paused", "disabled"]
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None = Field(description="during a rotation: when the old secret stops signing")
    secret: str | None = Field(
        default=None, description="`whsec_…`: only in the answer that created it (creation, rotation); keep it"
    )


class SubscriptionPage(BaseModel):
    subscriptions: list[SubscriptionAnswer]
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last")


class NotFound(LookupError):
    pass


class UrlRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


class NotRetryable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"the delivery is {status}: only a failed one can be retried")
        self.status = status


def answer_of(stored: repository.StoredSubscription, secret: str | None = None) -> SubscriptionAnswer:
    return SubscriptionAnswer(
        subscription_id=stored.subscription_id, url=stored.url, description=stored.description, events=stored.events,
        filters=Filters(kinds=stored.kinds, segments=stored.segments), format=stored.format,
        status=stored.status,
        disabled_reason=stored.disabled_reason, failing_since=stored.failing_since, created_at=stored.created_at,
        updated_at=stored.updated_at, previous_secret_until=stored.previous_secret_until, secret=secret,
    )  # fmt: skip


def checked_url(url: AnyUrl, allow_private: bool) -> str:
    text = str(url)
    problem = url_problem(text, allow_private)
    if problem is not None:
        raise UrlRefused(problem)
    return text


async def create(
    engine: AsyncEngine, sealer: Sealer, body: NewSubscription, allow_private: bool, actor: str
) -> SubscriptionAnswer:
    """A new subscription; its answer holds the signing secret, the only time it is shown."""
    url = checked_url(body.url, allow_private)
    secret = new_secret()
    async with engine.begin() as conn:
        stored = await repository.insert_subscription(
            conn, sealer, url=url, description=body.description, events=sorted(set(body.events)),
            kinds=body.filters.kinds, segments=body.filters.segments, format=body.format, secret=secret,
            now=datetime.now(UTC),
        )  # fmt: skip
        await audit.record(conn, actor, "webhook.created", stored.subscription_id, {"events": stored.events})
    return answer_of(stored, secret)


async def change(
    engine: AsyncEngine,
    sealer: Sealer,
    subscription_id: str,
    body: SubscriptionPatch,
    allow_private: bool,
    actor: str,
) -> SubscriptionAnswer:
    """Pause, resume (a disabled one too), change what it receives or where, or rotate its secret
    (the old one signs beside the new for `overlap_s`; the new one is in the answer)."""
    fields = body.model_fields_set
    changes: dict[str, Any] = {}
    if body.url is not None:
        changes["url"] = checked_url(body.url, allow_private)
    if body.events is not None:
        changes["events"] = sorted(set(body.events))
    if body.filters is not None:
        changes["kinds"], changes["segments"] = body.filters.kinds, body.filters.segments
    if body.format is not None:
        changes["format"] = body.format
    if "description" in fields:
        changes["description"] = body.description
    if body.status is not None:
        changes["status"] = body.status
        if body.status == "active":
            changes["disabled_reason"], changes["failing_since"] = None, None
    secret = None
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        if await repository.subscription(conn, subscription_id, lock=True) is None:
            raise NotFound(subscription_id)
        if body.rotate_secret:
            secret = new_secret()
            await repository.rotate_secret(conn, sealer, subscription_id, secret)
            changes["previous_secret_until"] = now + timedelta(seconds=body.overlap_s)
        stored = await repository.update_subscription(conn, subscription_id, changes, now)
        detail = {"fields": sorted(fields - {"overlap_s"}), "status": stored.status}
        await audit.record(conn, actor, "webhook.changed", subscription_id, detail)
    return answer_of(stored, secret)


async def remove(engine: AsyncEngine, subscription_id: str, actor: str) -> None:
    async with engine.begin() as conn:
        if not await repository.delete_subscription(conn, subscription_id):
            raise NotFound(subscription_id)
        await audit.record(conn, actor, "webhook.deleted", subscription_id)


async def retry(engine: AsyncEngine, subscription_id: str, delivery_id: str, actor: str) -> None:
    async with engine.begin() as conn:
        was = await repository.retry(conn, subscription_id, delivery_id)
        if was is None:
            raise NotFound(delivery_id)
        if was != "failed":
            raise NotRetryable(was)
        await audit.record(conn, actor, "webhook.delivery_retried", delivery_id)
