"""Wires follow-up: the consumer loop's handler, and the lookup API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from followup_service import policy
from followup_service.api import policy_router, router, tickets_router
from followup_service.handlers import RouteResponses, WatchSlas
from followup_service.repository import SCHEMA
from followup_service.settings import FollowUpSettings
from shared.events import decoder, response_events
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan


def load_policy(settings: FollowUpSettings) -> policy.Policy:
    """The configured policy, or the default; PolicyError (naming file, rule, field) refuses the start."""
    return policy.load(settings.policy or policy.DEFAULT_POLICY)


def spec(settings: FollowUpSettings, routing: policy.Policy | None = None) -> ConsumerSpec[Any]:
    return ConsumerSpec(
        service="followup",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decoder(response_events),
        handler=RouteResponses(
            topics=settings.topics,
            pseudonyms=settings.pseudonyms(),
            clock=lambda: datetime.now(UTC),
            policy=routing or load_policy(settings),
        ),
        # The API writes TicketUpdated to the outbox too: the loop's tick publishes it even while
        # no response arrives.
        tick=WatchSlas(settings.topics, settings.sla, clock=lambda: datetime.now(UTC)),
        tick_s=settings.outbox_interval_s,
    )


def create_app(settings: FollowUpSettings | None = None) -> FastAPI:
    settings = settings or FollowUpSettings()
    routing = load_policy(settings)
    app = create_base_app("followup", "NPS follow-up", consuming_lifespan(settings, spec(settings, routing)))
    app.state.settings = settings
    app.state.policy = routing
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(router)
    app.include_router(tickets_router)
    app.include_router(policy_router)
    return app
