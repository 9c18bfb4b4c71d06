"""Wires scoring: the consumer loop's handler and periodic step, and the query API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from scoring_service.api import router
from scoring_service.handlers import SCORING, Counting, CountResponses, PublishChanges, SegmentGauges
from scoring_service.rates.api import router as rates_router
from scoring_service.rates.handlers import CountRates
from scoring_service.repository import SCHEMA
from scoring_service.settings import ScoringSettings
from shared.consumer import Every, ticks
from shared.http import create_base_app, health_router
from shared.service import ConsumerSpec, consuming_lifespan
from shared.windows import parse_window
from shared.wire import decode_rate_event, decode_response


def clock() -> datetime:
    return datetime.now(UTC)


def count_responses(
    settings: ScoringSettings, counting: Counting = SCORING, now: Callable[[], datetime] = clock
) -> CountResponses:
    """The batch handler of the responses topic (the service's, and `nps scoring rebuild --replay`'s);
    with themes' counting (themes_service.handlers.ThemeCounts), the themes consumer's."""
    return CountResponses(
        dimensions=settings.segment_dimensions,
        max_values=settings.max_values_per_dimension,
        pseudonyms=settings.pseudonyms(),
        clock=now,
        retention_days=settings.retention_days,
        counting=counting,
    )


def spec(settings: ScoringSettings, now: Callable[[], datetime] = clock) -> ConsumerSpec[Any]:
    """Scoring's consumer; `now` is the clock of its handler and periodic steps (tests pin it)."""
    return ConsumerSpec(
        service="scoring",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decode_response,
        handler=count_responses(settings, now=now),
        tick=ticks(
            PublishChanges(
                scores_topic=settings.topics.scores,
                current_days=settings.current_days,
                baseline_days=settings.baseline_days,
                daily_days=settings.score_event_days,
                interval_s=settings.score_event_interval_s,
                clock=now,
            ),
            Every(
                SegmentGauges(settings.gauge_segments, parse_window(settings.metric_window), now),
                settings.metric_interval_s,
            ),
        ),
        # Checked often, so a change is published soon after its interval has passed.
        tick_s=min(settings.score_event_interval_s / 4, 0.25),
    )


def rates_spec(settings: ScoringSettings) -> ConsumerSpec[Any]:
    """The response-rate consumer: invitations and responses, in a group of its own."""
    return ConsumerSpec(
        service="rates",
        schema=SCHEMA,
        topic=settings.topics.invitations,
        more_topics=(settings.topics.responses,),
        lead_topic=settings.topics.invitations if settings.rates_invitations_first_s > 0 else None,
        lead_hold_s=settings.rates_invitations_first_s,
        group_id=settings.rates_group,
        decode=decode_rate_event,
        handler=CountRates(
            dimensions=settings.segment_dimensions,
            max_values=settings.max_values_per_dimension,
            pseudonyms=settings.pseudonyms(),
            match_window=timedelta(days=settings.match_window_days),
        ),
    )


def consumers(settings: ScoringSettings, now: Callable[[], datetime] = clock) -> list[ConsumerSpec[Any]]:
    """The consumer loops `settings.consumers` names, the counts first when both run."""
    counts = [spec(settings, now)] if "counts" in settings.consumers else []
    return counts + ([rates_spec(settings)] if "rates" in settings.consumers else [])


def create_app(settings: ScoringSettings | None = None, now: Callable[[], datetime] = clock) -> FastAPI:
    """The service; `now` is the clock of its consumer and of the API's "today" (tests pin it)."""
    settings = settings or ScoringSettings()
    first, *more = consumers(settings, now)
    app = create_base_app(
        "scoring",
        "NPS scoring",
        consuming_lifespan(settings, first, *more),
        db_timeout_s=settings.db_timeout_s,
    )
    app.state.settings = settings
    app.state.clock = now
    app.include_router(health_router(lambda: app.state.resources.checks(), settings.metrics_secret))
    app.include_router(router)
    app.include_router(rates_router)
    return app
