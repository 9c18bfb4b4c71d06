from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scoring_service.handlers import CountResponses
from scoring_service.repository import SCHEMA
from scoring_service.settings import ScoringSettings
from shared.events import decoder, response_events
from shared.service import ConsumerSpec


def spec(settings: ScoringSettings) -> ConsumerSpec[Any]:
    return ConsumerSpec(
        service="scoring",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decoder(response_events),
        handler=CountResponses(
            scores_topic=settings.topics.scores,
            current_days=settings.current_days,
            baseline_days=settings.baseline_days,
            clock=lambda: datetime.now(UTC),
        ),
    )
