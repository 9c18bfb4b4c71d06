"""Wires `nps themes`: the tagging consumer of the responses topic, and the themes API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from scoring_service.bootstrap import clock, count_responses
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan
from shared.windows import parse_window
from shared.wire import decode_response
from themes_service.api import router
from themes_service.gauges import ThemeGauges
from themes_service.handlers import ThemeCounts
from themes_service.repository import SCHEMA
from themes_service.settings import ThemesSettings
from themes_service.taxonomy import Taxonomy, load_taxonomy


def spec(
    settings: ThemesSettings, taxonomy: Taxonomy | None = None, now: Callable[[], datetime] = clock
) -> ConsumerSpec[Any]:
    """The tagging consumer; `now` is the clock of its handler and gauges (tests pin it)."""
    taxonomy = taxonomy or load_taxonomy(settings.taxonomy)
    return ConsumerSpec(
        service="themes",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decode_response,
        handler=count_responses(settings, ThemeCounts(taxonomy), now),
        tick=ThemeGauges(taxonomy, parse_window(settings.metric_window), now),  # the only periodic step
        tick_s=settings.metric_interval_s,
    )


def create_app(settings: ThemesSettings | None = None, now: Callable[[], datetime] = clock) -> FastAPI:
    """The service; `now` is the clock of its consumer and of the API's "today" (tests pin it)."""
    settings = settings or ThemesSettings()
    taxonomy = load_taxonomy(settings.taxonomy)  # ThemesError: the service refuses to start
    app = create_base_app(
        "themes",
        "NPS themes",
        consuming_lifespan(settings, spec(settings, taxonomy, now)),
        db_timeout_s=settings.db_timeout_s,
    )
    app.state.settings = settings
    app.state.clock = now
    app.state.taxonomy = taxonomy
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(router)
    return app
