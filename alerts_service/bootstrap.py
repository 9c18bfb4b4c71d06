"""Wires alerts: the consumer loop's handler, and the alerts API."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from alerts_service.api import router
from alerts_service.domain import DropRule
from alerts_service.handlers import EvaluateScores
from alerts_service.repository import SCHEMA
from alerts_service.settings import AlertSettings
from shared.events import decoder, score_events
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan


def spec(settings: AlertSettings) -> ConsumerSpec[Any]:
    return ConsumerSpec(
        service="alerts",
        schema=SCHEMA,
        topic=settings.topics.scores,
        group_id=settings.group_id,
        decode=decoder(score_events),
        handler=EvaluateScores(
            rule=DropRule(drop_points=settings.drop_points, min_responses=settings.min_responses),
            alerts_topic=settings.topics.alerts,
        ),
    )


def create_app(settings: AlertSettings | None = None) -> FastAPI:
    settings = settings or AlertSettings()
    app = create_base_app("alerts", "NPS alerts", consuming_lifespan(settings, spec(settings)))
    app.state.settings = settings
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(router)
    return app
