"""Wires ingest: the database and broker adapters, the use cases, the key gate, the routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import Depends, FastAPI

from ingest_service.api import RAW_ROUTES, router
from ingest_service.domain import Limits
from ingest_service.handlers import Ingest
from ingest_service.invitations import Invitations
from ingest_service.prompt import MirrorContact, PromptReader, PromptRules
from ingest_service.public import PUBLIC_PATHS, PublicCalls
from ingest_service.publisher import KafkaPublisher
from ingest_service.raw import RawFirst, serve_raw
from ingest_service.replay import Watermark
from ingest_service.repository import ResponseStore
from ingest_service.settings import IngestSettings
from ingest_service.widget import router as widget_router
from shared.auth import bearer, gate_for
from shared.db import database_reachable, make_engine
from shared.events import ContactChanged, contact_events
from shared.http import BodyLimitMiddleware, base_app, health_router, report_worker_failure
from shared.kafka import broker_reachable, make_producer
from shared.ratelimit import RateLimiter
from shared.service import ConsumerSpec, running_loop
from shared.workers import is_first_worker


def contact_spec(settings: IngestSettings) -> ConsumerSpec[ContactChanged]:
    """The mirror of follow-up's opt-outs that GET /v1/prompt reads (ingest_service/prompt.py)."""
    return ConsumerSpec(
        service="ingest-contact",
        schema="ingest",
        topic=settings.topics.contact,
        group_id=settings.contact_group_id,
        decode=contact_events.validate_json,
        handler=MirrorContact(settings.pseudonyms()),
    )


def create_app(settings: IngestSettings | None = None) -> RawFirst:
    settings = settings or IngestSettings()
    limits = Limits(
        max_future_skew=timedelta(seconds=settings.max_future_skew_s), max_age=timedelta(days=settings.max_age_days)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.require_database_url(), timeout_s=settings.db_timeout_s, name="nps-ingest")
        producer = make_producer(settings, client_id="nps-ingest", linger_ms=settings.producer_linger_ms)
        await producer.start()
        store = ResponseStore(engine)
        ingest = Ingest(
            KafkaPublisher(producer, settings.publish_timeout_s),
            store,
            settings.topics.responses,
            limits,
            db_timeout_s=settings.db_timeout_s,
            invitations_topic=settings.topics.invitations,
            pseudonyms=settings.pseudonyms(),
        )
        recorder = asyncio.create_task(ingest.run(), name="recorder")
        recorder.add_done_callback(lambda t: report_worker_failure(app, t))
        follower = Watermark(
            engine,
            settings.require_bootstrap(),
            {
                settings.topics.responses: settings.replay_groups,
                settings.topics.invitations: settings.replay_invitation_groups,
            },
            margin=settings.replay_margin,
            retention=timedelta(hours=settings.replay_retention_hours),
            clock=lambda: datetime.now(UTC),
        )
        # Once per service: in the first of several worker processes (shared/workers.py).
        watermark = asyncio.create_task(
            follower.run(settings.replay_check_s) if is_first_worker() else asyncio.Event().wait(),
            name="replay-watermark",
        )
        watermark.add_done_callback(lambda t: report_worker_failure(app, t))
        app.state.engine, app.state.producer = engine, producer
        app.state.ingest = ingest
        app.state.invitations = Invitations(
            store, KafkaPublisher(producer, settings.publish_timeout_s), settings.topics.invitations, limits
        )
        # Publishable keys' identity secrets open with NPS_SECRETS_KEY; without it none verifies.
        app.state.public = PublicCalls(
            settings.sealer() if settings.secrets_key is not None else None,
            RateLimiter(settings.public_rate_per_address_s, settings.public_burst_per_address),
            RateLimiter(settings.public_rate_per_respondent_s, settings.public_burst_per_respondent),
        )
        app.state.pseudonyms = settings.pseudonyms()
        app.state.prompt_reader = PromptReader(engine, settings.db_timeout_s)
        reader = asyncio.create_task(app.state.prompt_reader.run(), name="prompt-reader")
        reader.add_done_callback(lambda t: report_worker_failure(app, t))
        app.state.prompt_rules = PromptRules(
            survey_gap=timedelta(days=settings.survey_min_days),
            asked_gap=timedelta(days=settings.prompt_gap_days),
            period_days=settings.sample_period_days,
            samples=settings.prompt_samples,
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                if is_first_worker():  # one mirror of the opt-outs per service
                    await stack.enter_async_context(
                        running_loop(settings, contact_spec(settings), "nps-ingest-contact")
                    )
                async with gate_for(app, engine, settings):
                    yield
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            recorder.cancel()
            watermark.cancel()
            await asyncio.gather(watermark, return_exceptions=True)
            await producer.stop()  # flushes what is in flight
            await store.close()
            await engine.dispose()

    app = base_app(RawFirst, "ingest", "NPS ingest", lifespan, db_timeout_s=settings.db_timeout_s)
    app.preflight = PUBLIC_PATHS
    app.preflight_origins = lambda: app.state.gate.keys.publishable_origins()
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.include_router(
        health_router(
            lambda: {
                "broker": lambda: broker_reachable(app.state.producer),
                "database": lambda: database_reachable(app.state.engine, settings.db_timeout_s),
            },
            settings.metrics_secret,
        )
    )
    app.include_router(router)
    app.include_router(widget_router)
    limits_by_path = {route.path: settings.max_body_bytes for route in RAW_ROUTES}
    limits_by_path["/v1/responses/batch"] = settings.max_batch_body_bytes
    serve_raw(app, "ingest", RAW_ROUTES, limits_by_path, settings.body_timeout_s, dependencies=[Depends(bearer)])
    return app
