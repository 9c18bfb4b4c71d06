"""Wires follow-up: the consumer loop's handler, and the lookup API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from followup_service.api import router, tickets_router
from followup_service.handlers import RouteResponses, WatchSlas
from followup_service.repository import SCHEMA
from followup_service.settings import FollowUpSettings
from shared.events import decoder, response_events
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan


def spec(settings: FollowUpSettings) -> ConsumerSpec[Any]:
    return ConsumerSpec(
        service="followup",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decoder(response_events),
        handler=RouteResponses(
            topics=settings.topics, pseudonyms=settings.pseudonyms(), clock=lambda: datetime.now(UTC)
        ),
        # The API writes TicketUpdated to the outbox too: the loop's tick publishes it even while
        # no response arrives.
        tick=WatchSlas(settings.topics, settings.sla, clock=lambda: datetime.now(UTC)),
        tick_s=settings.outbox_interval_s,
    )


def create_app(settings: FollowUpSettings | None = None) -> FastAPI:
    settings = settings or FollowUpSettings()
    app = create_base_app("followup", "NPS follow-up", consuming_lifespan(settings, spec(settings)))
    app.state.settings = settings
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(router)
    app.include_router(tickets_router)
    return app
