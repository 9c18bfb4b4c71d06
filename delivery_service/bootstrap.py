"""Wires delivery: the consumer loop that queues deliveries, the worker that sends them, and the
webhooks API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from delivery_service.api import router
from delivery_service.handlers import QueueDeliveries, decode
from delivery_service.repository import SCHEMA
from delivery_service.settings import DeliverySettings
from delivery_service.worker import DeliveryWorker, client_session
from shared.http import create_base_app, health_router, report_worker_failure
from shared.service import ConsumerSpec, consuming_lifespan


def spec(settings: DeliverySettings) -> ConsumerSpec[Any]:
    topics = settings.topics
    return ConsumerSpec(
        service="delivery",
        schema=SCHEMA,
        topic=topics.followups,
        more_topics=(topics.tickets, topics.alerts, topics.responses),
        group_id=settings.group_id,
        decode=decode,
        handler=QueueDeliveries(pseudonyms=settings.pseudonyms(), clock=lambda: datetime.now(UTC)),
    )


def with_worker(settings: DeliverySettings, inner: Callable[[FastAPI], Any]) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app), client_session(settings) as http:
            app.state.http = http  # the API's test sends
            worker = app.state.worker = DeliveryWorker(app.state.engine, settings, app.state.sealer)
            task = asyncio.create_task(worker.run(), name="delivery-worker")
            task.add_done_callback(lambda t: report_worker_failure(app, t))
            try:
                yield
            finally:
                worker.stop()
                await asyncio.gather(task, return_exceptions=True)

    return lifespan


def create_app(settings: DeliverySettings | None = None) -> FastAPI:
    settings = settings or DeliverySettings()
    app = create_base_app(
        "delivery",
        "NPS delivery (webhooks)",
        with_worker(settings, consuming_lifespan(settings, spec(settings))),
        db_timeout_s=settings.db_timeout_s,
    )
    app.state.settings = settings
    # The webhook signing secrets are sealed (shared/sealed.py): without the key delivery cannot
    # sign, so it refuses to start, saying which setting is missing.
    app.state.sealer = settings.sealer()

    def checks() -> Any:
        return {**app.state.resources.checks(), "worker": app.state.worker.healthy}

    app.include_router(health_router(checks, settings.metrics_secret))
    app.include_router(router)
    return app
