from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from followup_service.handlers import RouteResponses
from followup_service.repository import SCHEMA
from followup_service.settings import FollowUpSettings
from shared.events import decoder, response_events
from shared.service import ConsumerSpec


def spec(settings: FollowUpSettings) -> ConsumerSpec[Any]:
    return ConsumerSpec(
        service="followup",
        schema=SCHEMA,
        topic=settings.topics.responses,
        group_id=settings.group_id,
        decode=decoder(response_events),
        handler=RouteResponses(topics=settings.topics, clock=lambda: datetime.now(UTC)),
    )
