"""Delivery's API: webhook subscriptions (the secret shown once), a signed test, and each
subscription's deliveries with their attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from delivery_service import repository
from delivery_service.domain import EVENT_TYPES, Format, new_secret, url_problem, webhook_id
from delivery_service.worker import send_test
from shared import audit
from shared.auth import KEY_PROBLEMS, requires
from shared.http import Problem, ProblemError
from shared.service import ReadConnection
from shared.validation import FieldProblem

SubscriptionId = Annotated[
    str, Path(pattern=r"^wh_[0-9a-f]{24}$", description="a subscription's id, `wh_` and 24 hex digits")
]
DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{32}$", description="a delivery's id (its webhook-id)")]
EventName = Literal[
    "FollowUpCreated", "TicketOpened", "TicketUpdated", "TicketSlaBreached", "ScoreDropDetected", "ScoreDropResolved"
]
Kind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Segment = Annotated[str, StringConstraints(pattern=r"^(all|[a-z][a-z0-9_]{0,39}:[^\x00-\x1f\x7f]{1,256})$")]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Kind] | None = Field(
        default=None, min_length=1, max_length=50, description="follow-up kinds (FollowUpCreated only): referral, ..."
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
    events: list[EventName] = Field(min_length=1, max_length=len(EVENT_TYPES))
    filters: Filters = Field(default_factory=Filters)
    format: Format = "standard"
    description: Description | None = None


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "paused"] | None = Field(
        default=None, description="pause (events are kept and sent on resume) or resume (also a disabled one)"
    )
    url: AnyUrl | None = None
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
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


class TestAnswer(BaseModel):
    webhook_id: str
    delivered: bool
    status_code: int | None
    error: str | None
    latency_ms: float


class Attempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    latency_ms: float


class Delivery(BaseModel):
    delivery_id: str = Field(description="the webhook-id the endpoint receives")
    event_type: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: list[Attempt]
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: float | None


class DeliveryPage(BaseModel):
    deliveries: list[Delivery]
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null on the last")


router = APIRouter(tags=["webhooks"], responses=KEY_PROBLEMS)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such subscription"}}


def _answer(stored: repository.StoredSubscription, secret: str | None = None) -> SubscriptionAnswer:
    return SubscriptionAnswer(
        subscription_id=stored.subscription_id, url=stored.url, description=stored.description, events=stored.events,
        filters=Filters(kinds=stored.kinds, segments=stored.segments), format=stored.format,
        status=stored.status,
        disabled_reason=stored.disabled_reason, failing_since=stored.failing_since, created_at=stored.created_at,
        updated_at=stored.updated_at, previous_secret_until=stored.previous_secret_until, secret=secret,
    )  # fmt: skip


def _checked_url(request: Request, url: AnyUrl) -> str:
    text = str(url)
    problem = url_problem(text, request.app.state.settings.allow_private_urls)
    if problem is not None:
        raise ProblemError(
            422, "invalid_request", "the URL cannot receive webhooks", [FieldProblem(field="url", problem=problem)]
        )
    return text


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=SubscriptionAnswer,
    responses={422: {"model": Problem, "description": "invalid body, or a URL that may not be called"}},
)
async def create_subscription(
    request: Request, body: NewSubscription, actor: Annotated[str, requires("webhooks:write")]
) -> SubscriptionAnswer:
    """Subscribe an endpoint to events; the answer holds its signing secret, shown only here."""
    url = _checked_url(request, body.url)
    secret = new_secret()
    async with request.app.state.engine.begin() as conn:
        stored = await repository.insert_subscription(
            conn, url=url, description=body.description, events=sorted(set(body.events)),
            kinds=body.filters.kinds, segments=body.filters.segments, format=body.format, secret=secret,
            now=datetime.now(UTC),
        )  # fmt: skip
        await audit.record(conn, actor, "webhook.created", stored.subscription_id, {"events": stored.events})
    return _answer(stored, secret)


@router.get("/v1/webhooks", response_model=SubscriptionPage, dependencies=[requires("webhooks:read")])
async def list_subscriptions(
    conn: ReadConnection,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(pattern=r"^wh_[0-9a-f]{24}$", description="`next_after` of a page")] = None,
) -> SubscriptionPage:
    found = await repository.subscriptions(conn, limit + 1, after)
    page = found[:limit]
    return SubscriptionPage(
        subscriptions=[_answer(s) for s in page], next_after=page[-1].subscription_id if len(found) > limit else None
    )


@router.get(
    "/v1/webhooks/{subscription_id}",
    response_model=SubscriptionAnswer,
    responses=NOT_FOUND,
    dependencies=[requires("webhooks:read")],
)
async def get_subscription(conn: ReadConnection, subscription_id: SubscriptionId) -> SubscriptionAnswer:
    stored = await repository.subscription(conn, subscription_id)
    if stored is None:
        raise ProblemError(404, "not_found", "no such subscription")
    return _answer(stored)


@router.patch(
    "/v1/webhooks/{subscription_id}",
    response_model=SubscriptionAnswer,
    responses={**NOT_FOUND, 422: {"model": Problem, "description": "invalid body or URL"}},
)
async def patch_subscription(
    request: Request,
    subscription_id: SubscriptionId,
    body: SubscriptionPatch,
    actor: Annotated[str, requires("webhooks:write")],
) -> SubscriptionAnswer:
    """Pause, resume (a disabled subscription too), change the URL, events, filters, format or
    description, or rotate the secret (the old one keeps signing beside it for `overlap_s`)."""
    fields = body.model_fields_set
    changes: dict[str, Any] = {}
    if body.url is not None:
        changes["url"] = _checked_url(request, body.url)
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
    async with request.app.state.engine.begin() as conn:
        current = await repository.subscription(conn, subscription_id, lock=True)
        if current is None:
            raise ProblemError(404, "not_found", "no such subscription")
        if body.rotate_secret:
            secret = new_secret()
            await repository.rotate_secret(conn, subscription_id, secret)
            changes["previous_secret_until"] = now + timedelta(seconds=body.overlap_s)
        stored = await repository.update_subscription(conn, subscription_id, changes, now)
        await audit.record(
            conn, actor, "webhook.changed", subscription_id,
            {"fields": sorted(fields - {"overlap_s"}), "status": stored.status},
        )  # fmt: skip
    return _answer(stored, secret)


@router.delete("/v1/webhooks/{subscription_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_subscription(
    request: Request, subscription_id: SubscriptionId, actor: Annotated[str, requires("webhooks:write")]
) -> Response:
    """Unsubscribe: its pending deliveries are dropped with it."""
    async with request.app.state.engine.begin() as conn:
        if not await repository.delete_subscription(conn, subscription_id):
            raise ProblemError(404, "not_found", "no such subscription")
        await audit.record(conn, actor, "webhook.deleted", subscription_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{subscription_id}/test",
    response_model=TestAnswer,
    responses=NOT_FOUND,
    dependencies=[requires("webhooks:write")],
)
async def test_subscription(request: Request, subscription_id: SubscriptionId) -> TestAnswer:
    """Send a signed `WebhookTest` event to the endpoint now (a paused one too) and say how it answered."""
    async with request.app.state.engine.connect() as conn:
        target = await repository.target(conn, subscription_id)
    if target is None:
        raise ProblemError(404, "not_found", "no such subscription")
    now = datetime.now(UTC)
    msg_id = webhook_id(subscription_id, f"test {now.isoformat()}".encode())
    _, answer = await send_test(request.app.state.http, request.app.state.settings, target, msg_id, now)
    return TestAnswer(
        webhook_id=msg_id,
        delivered=answer.status is not None and 200 <= answer.status < 300,
        status_code=answer.status,
        error=answer.error,
        latency_ms=round(answer.latency_ms, 1),
    )


@router.get(
    "/v1/webhooks/{subscription_id}/deliveries",
    response_model=DeliveryPage,
    responses=NOT_FOUND,
    dependencies=[requires("webhooks:read")],
)
async def list_deliveries(
    conn: ReadConnection,
    subscription_id: SubscriptionId,
    status: Annotated[Literal["pending", "delivered", "failed", "cancelled"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, description="`next_before` of a page")] = None,
) -> DeliveryPage:
    """Newest first, with every attempt: status codes, errors, latency, the next attempt's time."""
    if await repository.subscription(conn, subscription_id) is None:
        raise ProblemError(404, "not_found", "no such subscription")
    found = await repository.deliveries(conn, subscription_id, status, limit + 1, before)
    page = found[:limit]
    attempts = await repository.attempts_of(conn, [d.delivery_id for d in page])
    return DeliveryPage(
        deliveries=[
            Delivery(
                delivery_id=d.delivery_id,
                event_type=d.event_type,
                status=d.status,
                attempts=[Attempt.model_validate(a, from_attributes=True) for a in attempts.get(d.delivery_id, [])],
                created_at=d.created_at,
                next_attempt_at=d.next_attempt_at,
                finished_at=d.finished_at,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                last_latency_ms=d.last_latency_ms,
            )
            for d in page
        ],
        next_before=page[-1].seq if len(found) > limit else None,
    )


@router.post(
    "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_class=Response,
    responses={
        404: {"model": Problem, "description": "no such subscription or delivery"},
        409: {"model": Problem, "description": "only a failed delivery can be retried"},
    },
)
async def retry_delivery(
    request: Request,
    subscription_id: SubscriptionId,
    delivery_id: DeliveryId,
    actor: Annotated[str, requires("webhooks:write")],
) -> Response:
    """A failed delivery is attempted again now, its retry schedule started over."""
    async with request.app.state.engine.begin() as conn:
        was = await repository.retry(conn, subscription_id, delivery_id)
        if was is None:
            raise ProblemError(404, "not_found", "no such delivery for this subscription")
        if was != "failed":
            raise ProblemError(409, "not_failed", f"the delivery is {was}: only a failed one can be retried")
        await audit.record(conn, actor, "webhook.delivery_retried", delivery_id)
    return Response(status_code=202)
