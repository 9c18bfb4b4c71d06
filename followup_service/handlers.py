"""Follow-up use cases: route a batch of responses, exactly one follow-up each, and apply erasures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service import metrics, publisher, repository
from followup_service.domain import FollowUp, plan
from shared import outbox
from shared.consumer import Message
from shared.events import ResponseEvent, ResponseSubmitted
from shared.privacy import Pseudonyms
from shared.settings import Topics


@dataclass(frozen=True, slots=True)
class RouteResponses:
    topics: Topics
    pseudonyms: Pseudonyms
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseEvent]]) -> None:
        now = self.clock()
        requested = self.pseudonyms.latest_requests(m.event for m in batch)
        erasures = await repository.ERASURES.record(conn, requested)
        # A revision does not route a response again: one follow-up per response.
        submitted = [m.event for m in batch if isinstance(m.event, ResponseSubmitted)]
        unknown = {self.pseudonyms.key(e.respondent_id) for e in submitted} - erasures.keys()
        erasures.update(await repository.ERASURES.of(conn, unknown))

        planned: dict[str, FollowUp] = {}
        skipped = 0
        for event in submitted:
            if event.response_id in planned:
                continue
            followup = plan(event, now, erasures.get(self.pseudonyms.key(event.respondent_id)))
            if followup is None:
                skipped += 1
            else:
                planned[event.response_id] = followup
        new_ids = await repository.insert_new(conn, list(planned.values()), self.pseudonyms.key)
        new = [f for f in planned.values() if f.response.response_id in new_ids]
        await repository.insert_tickets(conn, new)
        metrics.FOLLOWUPS_ERASED.inc(await repository.forget(conn, requested))
        await outbox.enqueue(conn, repository.SCHEMA, [o for f in new for o in publisher.outgoing(self.topics, f)])
        for f in new:
            metrics.FOLLOWUPS_CREATED.labels(f.kind).inc()
        metrics.FOLLOWUPS_DUPLICATE.inc(len(submitted) - skipped - len(new))
        metrics.FOLLOWUPS_SKIPPED_ERASED.inc(skipped)
