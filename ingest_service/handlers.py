"""Ingest use cases."""

from __future__ import annotations

from datetime import datetime, timedelta

from ingest_service import domain
from ingest_service.domain import SubmitResponse
from ingest_service.publisher import Publisher
from shared.events import ResponseSubmitted


async def submit_response(
    command: SubmitResponse,
    *,
    publisher: Publisher,
    topic: str,
    now: datetime,
    max_future_skew: timedelta,
    source: str | None = None,
) -> ResponseSubmitted:
    """Check, publish, and return the event once the broker has acknowledged it."""
    domain.check(command, now, max_future_skew)
    event = ResponseSubmitted(
        response_id=command.response_id or domain.new_response_id(),
        respondent_id=command.respondent_id,
        score=command.score,
        comment=command.comment,
        survey_id=command.survey_id,
        channel=command.channel,
        answered_at=command.answered_at or now,
        attributes=command.attributes,
        email=command.email,
        submitted_at=now,
        source=source,
    )
    # Keyed by respondent: all events of one person land on one partition, in order.
    await publisher.publish(topic, key=event.respondent_id.encode(), value=event.to_bytes())
    return event
