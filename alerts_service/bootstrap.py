"""Wires alerts: the consumer loop's handler (mirror the scores), its tick (evaluation rounds), and
the alerts API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from alerts_service.api import router
from alerts_service.drivers import ThemeDrivers
from alerts_service.handlers import Due, EvaluateRounds, MirrorScores
from alerts_service.repository import SCHEMA
from alerts_service.settings import AlertSettings
from shared.events import decoder, score_events
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan


def spec(
    settings: AlertSettings,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    drivers: ThemeDrivers | None = None,
) -> ConsumerSpec[Any]:
    due = Due()
    if drivers is None and settings.themes_url:
        key = settings.themes_api_key.get_secret_value() if settings.themes_api_key else None
        drivers = ThemeDrivers(settings.themes_url, key, settings.drivers_top, settings.drivers_timeout_s)
    return ConsumerSpec(
        service="alerts",
        schema=SCHEMA,
        topic=settings.topics.scores,
        group_id=settings.group_id,
        decode=decoder(score_events),
        handler=MirrorScores(due),
        tick=EvaluateRounds(
            rules=settings.rules(),
            timing=settings.timing(),
            alerts_topic=settings.topics.alerts,
            interval_s=settings.evaluate_interval_s,
            clock=clock,
            due=due,
            min_gap_s=settings.min_round_gap_s,
            drivers=drivers,
        ),
        tick_s=min(1.0, settings.evaluate_interval_s),
        closers=(drivers.close,) if drivers is not None else (),
    )


def create_app(settings: AlertSettings | None = None) -> FastAPI:
    settings = settings or AlertSettings()
    app = create_base_app(
        "alerts", "NPS alerts", consuming_lifespan(settings, spec(settings)), db_timeout_s=settings.db_timeout_s
    )
    app.state.settings = settings
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(router)
    return app
