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
from shared.events import RespondentErased, ResponseEvent, ResponseSubmitted
from shared.settings import Topics


@dataclass(frozen=True, slots=True)
class RouteResponses:
    topics: Topics
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseEvent]]) -> None:
        now = self.clock()
        planned: dict[str, FollowUp] = {}
        submitted = [m.event for m in batch if isinstance(m.event, ResponseSubmitted)]
        # A revision does not route a response again (one follow-up per response); erasure of
        # the personal data follow-up holds is tracked by the follow-up issue, counted meanwhile.
        metrics.NOT_YET_APPLIED.inc(sum(1 for m in batch if isinstance(m.event, RespondentErased)))
        for event in submitted:
            if event.response_id not in planned:
                planned[event.response_id] = plan(event, now)
        new_ids = await repository.insert_new(conn, list(planned.values()))
        new = [f for f in planned.values() if f.response.response_id in new_ids]
        await repository.insert_tickets(conn, new)
        await outbox.enqueue(conn, repository.SCHEMA, [o for f in new for o in publisher.outgoing(self.topics, f)])
        for f in new:
            metrics.FOLLOWUPS_CREATED.labels(f.kind).inc()
        metrics.FOLLOWUPS_DUPLICATE.inc(len(submitted) - len(new))
