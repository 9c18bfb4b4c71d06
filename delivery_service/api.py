"""Delivery's API: webhook subscriptions (the secret shown once), a signed test, and each
subscription's deliveries with their attempts."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from delivery_service import repository, subscriptions
from delivery_service.domain import webhook_id
from delivery_service.subscriptions import (
    NewSubscription,
    NotFound,
    NotRetryable,
    SubscriptionAnswer,
    SubscriptionPage,
    SubscriptionPatch,
    UrlRefused,
    answer_of,
)
from delivery_service.worker import send_test
from shared import deadline
from shared.auth import KEY_PROBLEMS, requires
from shared.problems import Problem, ProblemError
from shared.service import ReadConnection
from shared.validation import FieldProblem

SubscriptionId = Annotated[
    str, Path(pattern=r"^wh_[0-9a-f]{24}$", description="a subscription's id, `wh_` and 24 hex digits")
]
DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{32}$", description="a delivery's id (its webhook-id)")]


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


def _allow_private(request: Request) -> bool:
    return bool(request.app.state.settings.allow_private_urls)


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such subscription"}}


def _refused(exc: UrlRefused) -> ProblemError:
    return ProblemError(
        422, "invalid_request", "the URL cannot receive webhooks", [FieldProblem(field="url", problem=str(exc))]
    )


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
    try:
        return await subscriptions.create(
            request.app.state.engine, request.app.state.sealer, body, _allow_private(request), actor
        )
    except UrlRefused as exc:
        raise _refused(exc) from None


@router.get("/v1/webhooks", response_model=SubscriptionPage, dependencies=[requires("webhooks:read")])
async def list_subscriptions(
    conn: ReadConnection,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(pattern=r"^wh_[0-9a-f]{24}$", description="`next_after` of a page")] = None,
) -> SubscriptionPage:
    found = await repository.subscriptions(conn, limit + 1, after)
    page = found[:limit]
    return SubscriptionPage(
        subscriptions=[answer_of(s) for s in page], next_after=page[-1].subscription_id if len(found) > limit else None
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
    return answer_of(stored)


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
    try:
        return await subscriptions.change(
            request.app.state.engine, request.app.state.sealer, subscription_id, body, _allow_private(request), actor
        )
    except UrlRefused as exc:
        raise _refused(exc) from None
    except NotFound:
        raise ProblemError(404, "not_found", "no such subscription") from None


@router.delete("/v1/webhooks/{subscription_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_subscription(
    request: Request, subscription_id: SubscriptionId, actor: Annotated[str, requires("webhooks:write")]
) -> Response:
    """Unsubscribe: its pending deliveries are dropped with it."""
    try:
        await subscriptions.remove(request.app.state.engine, subscription_id, actor)
    except NotFound:
        raise ProblemError(404, "not_found", "no such subscription") from None
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
        target = await repository.target(conn, request.app.state.sealer, subscription_id)
    if target is None:
        raise ProblemError(404, "not_found", "no such subscription")
    now = datetime.now(UTC)
    msg_id = webhook_id(subscription_id, f"test {now.isoformat()}".encode())
    async with deadline.paused():  # the endpoint is not the database: NPS_DELIVERY_TIMEOUT_S bounds it
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
            Delivery.model_validate({**asdict(d), "attempts": [asdict(a) for a in attempts.get(d.delivery_id, [])]})
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
    try:
        await subscriptions.retry(request.app.state.engine, subscription_id, delivery_id, actor)
    except NotFound:
        raise ProblemError(404, "not_found", "no such delivery for this subscription") from None
    except NotRetryable as exc:
        raise ProblemError(409, "not_failed", str(exc)) from None
    return Response(status_code=202)
