"""Ingest's HTTP API: product apps post, revise and erase responses here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pydantic_core
from fastapi import Body, Depends, FastAPI, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, Field

from ingest_service import metrics
from ingest_service.domain import (
    EXAMPLE,
    MAX_BATCH_ITEMS,
    PLAIN,
    InvalidResponse,
    Limits,
    RateLimiter,
    ReviseResponse,
    SubmitResponse,
    hash_api_key,
)
from ingest_service.handlers import CONFLICT_PROBLEM, Conflict, Ingest, NotFound, StoreUnavailable
from ingest_service.publisher import KafkaPublisher, PublishFailed
from ingest_service.repository import BatchingRecorder, KeyCache
from ingest_service.settings import IngestSettings
from shared.db import database_reachable, make_engine
from shared.http import (
    BodyLimitMiddleware,
    FieldProblem,
    Problem,
    ProblemError,
    RawRequest,
    ServiceApp,
    create_base_app,
    health_router,
    json_body,
    report_worker_failure,
)
from shared.kafka import broker_reachable, make_producer

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, description="An API key made with `nps keys create NAME`.")

RETRY = {"Retry-After": "1"}


class Accepted(BaseModel):
    response_id: str


class Revised(BaseModel):
    response_id: str
    version: int


class ErasureAccepted(BaseModel):
    erasure_id: str
    respondent_id: str


class Validated(BaseModel):
    valid: Literal[True] = True


class BatchIn(BaseModel):
    """Each item is validated on its own: valid items are accepted even when others are not."""

    responses: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchItem(BaseModel):
    index: int
    status: Literal["accepted", "rejected", "conflict", "unavailable"]
    response_id: str | None = None
    errors: list[FieldProblem] = []


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    conflict: int
    unavailable: int
    results: list[BatchItem]


def authorize(request: Request | ServiceApp, authorization: str | None) -> str:
    """The name of the calling app's key, from an `Authorization` header; also enforces that key's
    rate limit. Shared by the FastAPI dependency and the raw routes."""
    state = request.app.state if isinstance(request, Request) else request.state
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not authorization or scheme.lower() != "bearer" or not credentials:
        raise ProblemError(
            401, "missing_api_key", "send 'Authorization: Bearer <api key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    name: str | None = state.keys.name_of(hash_api_key(credentials))
    if name is None:
        raise ProblemError(401, "invalid_api_key", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    limiter: RateLimiter = state.limiter
    wait = limiter.retry_after(name, time.monotonic())
    if wait:
        raise ProblemError(
            429,
            "rate_limited",
            f"rate limit of key '{name}' reached; retry in {wait}s",
            headers={"Retry-After": str(wait)},
        )
    return name


# Both dependencies are coroutines on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, and two thread hand-offs per request cost more than the whole validation.
async def ingest(request: Request) -> Ingest:
    handler: Ingest = request.app.state.ingest
    return handler


async def api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    return authorize(request, f"Bearer {credentials.credentials}" if credentials is not None else None)


# Module level, not inside create_app: with postponed annotations FastAPI resolves these names
# in the module's globals (inside the factory they silently became required query parameters).
Source = Annotated[str, Depends(api_key)]
Handler = Annotated[Ingest, Depends(ingest)]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "missing or unknown API key",
        404: "no such response",
        409: "the response_id was already used with a different body",
        413: "the body is too large",
        422: "invalid input; `errors` names each field",
        429: "rate limit of this API key; retry after Retry-After seconds",
        503: "the broker or database did not answer; nothing was promised: retry after Retry-After",
    }
    return {code: {"model": Problem, "description": described[code]} for code in codes}


def create_app(settings: IngestSettings | None = None) -> ServiceApp:
    settings = settings or IngestSettings()
    limits = Limits(
        max_future_skew=timedelta(seconds=settings.max_future_skew_s), max_age=timedelta(days=settings.max_age_days)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.require_database_url())
        producer = make_producer(settings, client_id="nps-ingest", linger_ms=settings.producer_linger_ms)
        await producer.start()
        keys = KeyCache(engine, settings.key_refresh_s)
        await keys.load()
        recorder = BatchingRecorder(engine)
        workers = [asyncio.create_task(recorder.run(), name="recorder"), asyncio.create_task(keys.run(), name="keys")]
        for task in workers:
            task.add_done_callback(lambda t: report_worker_failure(app, t))
        app.state.engine, app.state.producer, app.state.keys = engine, producer, keys
        app.state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        app.state.ingest = Ingest(
            KafkaPublisher(producer, settings.publish_timeout_s), recorder, engine, settings.topics.responses, limits
        )
        try:
            yield
        finally:
            for task in workers:
                task.cancel()
            await producer.stop()  # flushes what is in flight
            await engine.dispose()

    app = create_base_app("ingest", "NPS ingest", lifespan)
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        per_path={"/v1/responses/batch": settings.max_batch_body_bytes},
    )
    app.include_router(
        health_router(
            lambda: {
                "broker": lambda: broker_reachable(app.state.producer),
                "database": lambda: database_reachable(app.state.engine),
            }
        )
    )

    @app.post(
        "/v1/responses",
        status_code=202,
        response_model=Accepted,
        tags=["responses"],
        summary="Submit one survey response",
        responses=problems(401, 409, 413, 422, 429, 503),
    )
    async def post_response(
        body: Annotated[SubmitResponse, Body(openapi_examples={"detractor": {"value": EXAMPLE}})],
        handler: Handler,
        source: Source,
    ) -> Accepted:
        return await submit_one(handler, body, source)

    @app.post(
        "/v1/responses/validate",
        response_model=Validated,
        tags=["responses"],
        summary="Check a response without submitting it (a dry run)",
        responses=problems(401, 413, 422, 429),
    )
    async def validate_response(
        body: Annotated[SubmitResponse, Body(openapi_examples={"detractor": {"value": EXAMPLE}})],
        handler: Handler,
        source: Source,
    ) -> Validated:
        return validate_one(handler, body)

    if settings.raw_routes:
        # The three POST endpoints again, as raw routes (shared/http.py, RawRoute): the same
        # functions, minus the framework's per-request cost. The declarations above stay for the
        # OpenAPI document, and serve when NPS_INGEST_RAW_ROUTES=false.
        async def raw_post(request: RawRequest) -> tuple[int, BaseModel]:
            source = authorize(app, request.header(b"authorization"))
            return 202, await submit_one(app.state.ingest, json_body(SubmitResponse, request), source)

        async def raw_validate(request: RawRequest) -> tuple[int, BaseModel]:
            authorize(app, request.header(b"authorization"))
            return 200, validate_one(app.state.ingest, json_body(SubmitResponse, request))

        async def raw_batch(request: RawRequest) -> tuple[int, BaseModel | bytes]:
            source = authorize(app, request.header(b"authorization"))
            return 200, pydantic_core.to_json(await submit_many(app.state.ingest, json_body(BatchIn, request), source))

        app.raw_route("POST", "/v1/responses", settings.max_body_bytes, raw_post)
        app.raw_route("POST", "/v1/responses/validate", settings.max_body_bytes, raw_validate)
        app.raw_route("POST", "/v1/responses/batch", settings.max_batch_body_bytes, raw_batch)

    @app.post(
        "/v1/responses/batch",
        response_model=BatchOut,
        tags=["responses"],
        summary=f"Submit up to {MAX_BATCH_ITEMS} responses (backfills)",
        description="Every item gets its own result. `accepted` means the broker has it; retry "
        "`unavailable` items with the `response_id` given back; fix `rejected` and `conflict` ones.",
        responses=problems(401, 413, 422, 429, 503),
    )
    async def post_batch(
        body: Annotated[
            BatchIn,
            Body(
                openapi_examples={
                    "two": {
                        "value": {"responses": [EXAMPLE, {**EXAMPLE, "response_id": "5d0c6a3e-web-43", "score": 10}]}
                    }
                }
            ),
        ],
        handler: Handler,
        source: Source,
    ) -> BatchOut:
        return BatchOut.model_validate(await submit_many(handler, body, source))

    @app.put(
        "/v1/responses/{response_id}",
        status_code=202,
        response_model=Revised,
        tags=["responses"],
        summary="Revise a response: its score, comment and attributes are replaced",
        responses=problems(401, 404, 413, 422, 429, 503),
    )
    async def put_response(
        response_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PLAIN)],
        body: ReviseResponse,
        handler: Handler,
        source: Source,
    ) -> Revised:
        try:
            event = await handler.revise(response_id, body, datetime.now(UTC), source)
        except InvalidResponse as exc:
            raise invalid(exc) from exc
        except NotFound as exc:
            raise ProblemError(404, "not_found", "no response with that response_id") from exc
        except (PublishFailed, StoreUnavailable) as exc:
            raise unavailable(exc) from exc
        return Revised(response_id=response_id, version=event.version)

    @app.delete(
        "/v1/respondents/{respondent_id}",
        status_code=202,
        response_model=ErasureAccepted,
        tags=["respondents"],
        summary="Erase a respondent's personal data everywhere",
        responses=problems(401, 422, 429, 503),
    )
    async def erase_respondent(
        respondent_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PLAIN)],
        handler: Handler,
        source: Source,
    ) -> ErasureAccepted:
        try:
            event = await handler.erase(respondent_id, datetime.now(UTC), source)
        except (PublishFailed, StoreUnavailable) as exc:
            raise unavailable(exc) from exc
        log.info("erasure %s requested by key %s", event.erasure_id, source)
        return ErasureAccepted(erasure_id=event.erasure_id, respondent_id=respondent_id)

    return app


async def submit_one(handler: Ingest, body: SubmitResponse, source: str) -> Accepted:
    try:
        event = await handler.submit(body, datetime.now(UTC), source)
    except InvalidResponse as exc:
        metrics.RESPONSES.labels("rejected").inc()
        raise invalid(exc) from exc
    except Conflict as exc:
        metrics.RESPONSES.labels("conflict").inc()
        raise conflict() from exc
    except (PublishFailed, StoreUnavailable) as exc:
        metrics.RESPONSES.labels("unavailable").inc()
        raise unavailable(exc) from exc
    metrics.RESPONSES.labels("accepted").inc()
    return Accepted(response_id=event.response_id)


async def submit_many(handler: Ingest, body: BatchIn, source: str) -> dict[str, Any]:
    """The batch answer as plain data: the FastAPI route validates it into BatchOut, the raw route
    serializes it directly (1,000 result models cost more than the rest of the answer)."""
    try:
        results = await handler.submit_batch(body.responses, datetime.now(UTC), source)
    except StoreUnavailable as exc:
        metrics.RESPONSES.labels("unavailable").inc(len(body.responses))
        raise unavailable(exc) from exc
    counts = {status: 0 for status in ("accepted", "rejected", "conflict", "unavailable")}
    for r in results:
        counts[r.status] += 1
    for status, n in counts.items():
        metrics.RESPONSES.labels(status).inc(n)
    if counts["unavailable"] == len(results):
        raise unavailable(PublishFailed("no item acknowledged"))
    return {
        **counts,
        "results": [
            {
                "index": r.index,
                "status": r.status,
                "response_id": r.response_id,
                "errors": [{"field": e.field, "problem": e.problem} for e in r.errors],
            }
            for r in results
        ],
    }


def validate_one(handler: Ingest, body: SubmitResponse) -> Validated:
    try:
        handler.validate(body, datetime.now(UTC))
    except InvalidResponse as exc:
        raise invalid(exc) from exc
    return Validated()


def invalid(exc: InvalidResponse) -> ProblemError:
    return ProblemError(
        422, "invalid_request", "the response is invalid", [FieldProblem(field=exc.field, problem=exc.problem)]
    )


def conflict() -> ProblemError:
    return ProblemError(
        409, "response_id_conflict", CONFLICT_PROBLEM, [FieldProblem(field="response_id", problem=CONFLICT_PROBLEM)]
    )


def unavailable(exc: Exception) -> ProblemError:
    what = "database" if isinstance(exc, StoreUnavailable) else "broker"
    log.warning("%s did not answer in time (%s); answering 503", what, exc)
    return ProblemError(
        503, f"{what}_unavailable", f"the {what} did not answer in time; nothing was stored: retry", headers=RETRY
    )
