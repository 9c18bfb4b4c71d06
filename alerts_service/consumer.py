from __future__ import annotations

from typing import Any

from alerts_service.domain import DropRule
from alerts_service.handlers import EvaluateScores
from alerts_service.repository import SCHEMA
from alerts_service.settings import AlertSettings
from shared.events import decoder, score_events
from shared.service import ConsumerSpec


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
