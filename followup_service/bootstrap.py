"""Wires follow-up: the consumer loop's handler and tick, and each sub-domain's router."""

from __future__ import annotations

import asyncio
import logging
import signal
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from followup_service import metrics
from followup_service.contact import api as contact_api
from followup_service.experiments import api as experiments_api
from followup_service.experiments import repository as experiments_repository
from followup_service.handlers import RouteResponses
from followup_service.outcomes import api as outcomes_api
from followup_service.referrals import api as referrals_api
from followup_service.routing import api as routing_api
from followup_service.routing import policy
from followup_service.settings import FollowUpSettings
from followup_service.tables import SCHEMA
from followup_service.tickets import api as tickets_api
from followup_service.tickets.handlers import WatchSlas
from shared.consumer import Every
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan
from shared.wire import ResponseWire, decode_response

log = logging.getLogger(__name__)


def load_policy(settings: FollowUpSettings) -> policy.PolicyHolder:
    """The configured policy, or the default; PolicyError (naming file, rule, field) refuses the start."""
    return policy.PolicyHolder(settings.policy or policy.DEFAULT_POLICY)


async def record_experiments(engine: AsyncEngine, candidate: policy.Policy, path: Path) -> None:
    """Record the policy's experiments; PolicyError if one reuses a recorded id with other arms."""
    async with engine.begin() as conn:
        refused = await experiments_repository.record_experiments(
            conn, candidate.experiments, candidate.version, datetime.now(UTC)
        )
    if refused:
        raise policy.PolicyError([policy.PolicyProblem(str(path), None, "experiment", text) for text in refused])
    for experiment in candidate.experiments:  # every arm's series exists from the start, at zero
        for arm in experiment.arms:
            metrics.EXPERIMENT_FOLLOWUPS.labels(experiment.experiment_id, arm.name)


def checking_experiments(holder: policy.PolicyHolder) -> Callable[[AsyncEngine], Awaitable[None]]:
    """Before the loop consumes: the policy's experiments against those recorded (a restart with
    changed arms does not start)."""

    async def prepare(engine: AsyncEngine) -> None:
        try:
            await record_experiments(engine, holder.current, holder.path)
        except policy.PolicyError as exc:
            log.error("policy %s refused: %s", holder.current.version, exc)
            raise

    return prepare


async def reload_policy(holder: policy.PolicyHolder, engine: AsyncEngine) -> None:
    """On SIGHUP: the policy file again, if it checks out (its experiments too, against those
    recorded); else the running policy stays, loudly."""
    running = holder.current.version
    try:
        loaded = holder.read()
        await record_experiments(engine, loaded, holder.path)
    except policy.PolicyError as exc:
        metrics.POLICY_RELOADS.labels("refused").inc()
        log.error("policy not reloaded, version %s keeps running: %s", running, exc)
        return
    except Exception as exc:  # the database away: the running policy stays
        metrics.POLICY_RELOADS.labels("refused").inc()
        log.error("policy not reloaded, version %s keeps running: experiments not checked: %r", running, exc)
        return
    holder.current = loaded
    metrics.POLICY_RELOADS.labels("reloaded").inc()
    log.info("policy reloaded from %s: version %s, %d rules", holder.path, loaded.version, len(loaded.rules))


def reloading_on_sighup(holder: policy.PolicyHolder, inner: Callable[[FastAPI], Any]) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[None]] = set()

        def on_sighup() -> None:
            task = loop.create_task(reload_policy(holder, app.state.engine))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        try:
            async with inner(app):
                loop.add_signal_handler(signal.SIGHUP, on_sighup)
                yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    return lifespan


def spec(settings: FollowUpSettings, routing: policy.PolicyHolder | None = None) -> ConsumerSpec[Any]:
    routing = routing or load_policy(settings)
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
            policy=routing,
            contact=settings.contact_rules(),
        ),
        # The API writes TicketUpdated to the outbox too: the loop's tick publishes it even while
        # no response arrives. The SLA watch reads every active ticket (50,000 after the loop bench's
        # backlog: the largest part of PostgreSQL's work at 2,000 POSTs/s when it ran every tick).
        tick=Every(WatchSlas(settings.topics, settings.sla, clock=lambda: datetime.now(UTC)), settings.sla_check_s),
        tick_s=settings.outbox_interval_s,
        shard=person_shard,
        shards=settings.shards,
        prepare=checking_experiments(routing),
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
    app.include_router(experiments_api.router)
    return app
