"""Follow-up use cases: route a batch of responses, exactly one follow-up each, and apply erasures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service import metrics, publisher, repository
from followup_service.domain import FollowUp, TicketChange, TicketState, change_ticket, plan
from shared import audit, outbox
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


# --- tickets ---


class TicketNotFound(Exception):
    pass


class StaleVersion(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"the ticket is at version {current}")
        self.current = current


def state_of(row: Any) -> TicketState:
    return TicketState(row.status, row.assignee, row.resolution, row.version, row.first_contact_at, row.resolved_at)


async def update_ticket(
    conn: AsyncConnection,
    topics: Topics,
    ticket_id: str,
    change: TicketChange,
    expected_version: int | None,
    actor: str,
    now: datetime,
) -> Any:
    """Apply a support tool's change to a ticket, in the caller's transaction: the row is locked,
    the version checked (None: any), the transition checked; the history, the audit log and a
    TicketUpdated in the outbox are written with it. Returns the ticket as it now is."""
    row = await repository.get_ticket(conn, ticket_id, lock=True)
    if row is None:
        raise TicketNotFound(ticket_id)
    if expected_version is not None and row.version != expected_version:
        raise StaleVersion(row.version)
    after = change_ticket(state_of(row), change, now)  # IllegalTransition
    await repository.save_ticket(conn, ticket_id, after, now)
    await repository.add_history(conn, ticket_id, row.status, after, actor, change.note, now)
    what: dict[str, str | None] = {}
    if after.status != row.status:
        what["status"] = after.status
    if after.assignee != row.assignee:
        what["assignee"] = after.assignee
    if after.resolution != row.resolution:
        what["resolution"] = after.resolution
    if change.note is not None:
        what["note"] = "added"  # the note itself stays in follow-up's history
    await audit.record(conn, actor, "ticket.updated", ticket_id, {"version": after.version, **what})
    updated = await repository.get_ticket(conn, ticket_id)
    await outbox.enqueue(conn, repository.SCHEMA, [publisher.ticket_updated(topics, updated, what, actor)])
    metrics.TICKET_CHANGES.labels(after.status).inc()
    return updated
