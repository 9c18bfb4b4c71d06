"""Follow-up use cases: route a batch of responses, exactly one follow-up each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service import metrics, publisher, repository
from followup_service.domain import FollowUp, plan
from shared import outbox
from shared.consumer import Message
from shared.events import ResponseEvent
from shared.settings import Topics


@dataclass(frozen=True, slots=True)
class RouteResponses:
    topics: Topics
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseEvent]]) -> None:
        now = self.clock()
        planned: dict[str, FollowUp] = {}
        for message in batch:
            e = message.event
            planned.setdefault(
                e.response_id,
                plan(
                    response_id=e.response_id,
                    respondent_id=e.respondent_id,
                    score=e.score,
                    channel=e.channel,
                    survey_id=e.survey_id,
                    comment=e.comment,
                    answered_at=e.answered_at,
                    now=now,
                ),
            )
        new_ids = await repository.insert_new(conn, list(planned.values()))
        new = [f for f in planned.values() if f.response_id in new_ids]
        await repository.insert_tickets(conn, new)
        await outbox.enqueue(conn, repository.SCHEMA, [o for f in new for o in publisher.outgoing(self.topics, f)])
        for f in new:
            metrics.FOLLOWUPS_CREATED.labels(f.kind).inc()
        metrics.FOLLOWUPS_DUPLICATE.inc(len(batch) - len(new))
