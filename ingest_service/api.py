"""Ingest's HTTP API: product apps post responses here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from ingest_service import handlers, metrics
from ingest_service.domain import InvalidResponse, SubmitResponse
from ingest_service.publisher import KafkaPublisher, PublishFailed
from ingest_service.settings import IngestSettings
from shared.http import FieldProblem, Problem, ProblemError, create_base_app, health_router
from shared.kafka import broker_reachable, make_producer

log = logging.getLogger(__name__)


class Accepted(BaseModel):
    response_id: str


def publisher(request: Request) -> KafkaPublisher:
    pub: KafkaPublisher = request.app.state.publisher
    return pub


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings, client_id="nps-ingest", linger_ms=settings.producer_linger_ms)
        await producer.start()
        app.state.producer = producer
        app.state.publisher = KafkaPublisher(producer, settings.publish_timeout_s)
        try:
            yield
        finally:
            await producer.stop()  # flushes what is in flight

    app = create_base_app("ingest", "NPS ingest", lifespan)
    app.include_router(health_router(lambda: {"broker": lambda: broker_reachable(app.state.producer)}))

    @app.post(
        "/v1/responses",
        status_code=202,
        response_model=Accepted,
        tags=["responses"],
        responses={
            422: {"model": Problem, "description": "the response is invalid; `errors` names each field"},
            503: {"model": Problem, "description": "the broker did not acknowledge; retry after Retry-After"},
        },
    )
    async def post_response(body: SubmitResponse, pub: Annotated[KafkaPublisher, Depends(publisher)]) -> Accepted:
        try:
            event = await handlers.submit_response(
                body,
                publisher=pub,
                topic=settings.topics.responses,
                now=datetime.now(UTC),
                max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            )
        except InvalidResponse as exc:
            metrics.RESPONSES.labels("rejected").inc()
            raise ProblemError(
                422,
                "invalid_request",
                "the response is invalid",
                [FieldProblem(field=exc.field, problem=exc.problem)],
            ) from exc
        except PublishFailed as exc:
            metrics.RESPONSES.labels("unavailable").inc()
            log.warning("broker did not acknowledge a response in time (%s); answering 503", exc)
            raise ProblemError(
                503,
                "broker_unavailable",
                "the event broker did not acknowledge the response; retry",
                headers={"Retry-After": "1"},
            ) from exc
        metrics.RESPONSES.labels("accepted").inc()
        return Accepted(response_id=event.response_id)

    return app
