from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scoring_service.handlers import CountResponses, PublishChanges
from scoring_service.repository import SCHEMA
from scoring_service.settings import ScoringSettings
from shared.events import decoder, response_events
from shared.service import ConsumerSpec


def spec(settings: ScoringSettings) -> ConsumerSpec[Any]:
    def clock() -> datetime:
        return datetime.now(UTC)

    return ConsumerSpec(
        service="scoring",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decoder(response_events),
        handler=CountResponses(
            dimensions=settings.segment_dimensions,
            max_values=settings.max_values_per_dimension,
            clock=clock,
        ),
        tick=PublishChanges(
            scores_topic=settings.topics.scores,
            current_days=settings.current_days,
            baseline_days=settings.baseline_days,
            interval_s=settings.score_event_interval_s,
            clock=clock,
        ),
        # Checked often, so a change is published soon after its interval has passed.
        tick_s=min(settings.score_event_interval_s / 4, 0.25),
    )
