"""Wires follow-up: the consumer loop's handler and tick, and each sub-domain's router."""

from __future__ import annotations

import asyncio
import logging
import signal
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from followup_service import metrics
from followup_service.contact import api as contact_api
from followup_service.handlers import RouteResponses
from followup_service.outcomes import api as outcomes_api
from followup_service.referrals import api as referrals_api
from followup_service.routing import api as routing_api
from followup_service.routing import policy
from followup_service.settings import FollowUpSettings
from followup_service.tables import SCHEMA
from followup_service.tickets import api as tickets_api
from followup_service.tickets.handlers import WatchSlas
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan
from shared.wire import ResponseWire, decode_response

log = logging.getLogger(__name__)


def load_policy(settings: FollowUpSettings) -> policy.PolicyHolder:
    """The configured policy, or the default; PolicyError (naming file, rule, field) refuses the start."""
    return policy.PolicyHolder(settings.policy or policy.DEFAULT_POLICY)


def reload_policy(holder: policy.PolicyHolder) -> None:
    """On SIGHUP: the policy file again, if it checks out; else the running policy stays, loudly."""
    running = holder.current.version
    try:
        loaded = holder.reload()
    except policy.PolicyError as exc:
        metrics.POLICY_RELOADS.labels("refused").inc()
        log.error("policy not reloaded, version %s keeps running: %s", running, exc)
        return
    metrics.POLICY_RELOADS.labels("reloaded").inc()
    log.info("policy reloaded from %s: version %s, %d rules", holder.path, loaded.version, len(loaded.rules))


def reloading_on_sighup(holder: policy.PolicyHolder, inner: Callable[[FastAPI], Any]) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload_policy, holder)
        try:
            async with inner(app):
                yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    return lifespan


def spec(settings: FollowUpSettings, routing: policy.PolicyHolder | None = None) -> ConsumerSpec[Any]:
    return ConsumerSpec(
        service="followup",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decode_response,
        handler=RouteResponses(
            topics=settings.topics,
            pseudonyms=settings.pseudonyms(),
            clock=lambda: datetime.now(UTC),
            policy=routing or load_policy(settings),
            contact=settings.contact_rules(),
        ),
        # The API writes TicketUpdated to the outbox too: the loop's tick publishes it even while
        # no response arrives.
        tick=WatchSlas(settings.topics, settings.sla, clock=lambda: datetime.now(UTC)),
        tick_s=settings.outbox_interval_s,
        shard=person_shard,
        shards=settings.shards,
    )


def person_shard(event: ResponseWire) -> int:
    """Which of a batch's transactions an event goes to: everything follow-up keeps about a person
    (follow-ups, tickets, contacts, erasure) is theirs alone, so people are split between them."""
    return zlib.crc32(event.respondent_id.encode())


def create_app(settings: FollowUpSettings | None = None) -> FastAPI:
    settings = settings or FollowUpSettings()
    routing = load_policy(settings)
    lifespan = reloading_on_sighup(routing, consuming_lifespan(settings, spec(settings, routing)))
    app = create_base_app("followup", "NPS follow-up", lifespan, db_timeout_s=settings.db_timeout_s)
    app.state.settings = settings
    app.state.policy = routing
    app.state.pseudonyms = settings.pseudonyms()
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(routing_api.router)
    app.include_router(tickets_api.router)
    app.include_router(routing_api.policy_router)
    app.include_router(contact_api.router)
    app.include_router(referrals_api.router)
    app.include_router(outcomes_api.router)
    return app
