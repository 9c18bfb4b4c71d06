"""Ticket use cases: a batch's ticket steps applied in memory, a support tool's change, the SLA
watch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service import metrics, publisher
from followup_service.settings import Sla
from followup_service.tables import SCHEMA
from followup_service.tickets import repository
from followup_service.tickets.domain import (
    PRIORITIES,
    NewTicket,
    Priority,
    TicketChange,
    TicketOp,
    TicketState,
    change_ticket,
)
from shared import audit, outbox
from shared.outbox import Outgoing
from shared.settings import Topics

SYSTEM_ACTOR = "follow-up"  # who the history and TicketUpdated name for changes the loop makes


@dataclass(frozen=True, slots=True)
class TicketChanges:
    changed: list[repository.TicketRow]  # stored tickets, as they end the batch
    new: list[repository.TicketRow]
    history: list[dict[str, object]]
    events: list[Outgoing]  # a TicketUpdated per change


def ticket_changes(
    topics: Topics, steps: Sequence[NewTicket | TicketOp], stored: Mapping[str, repository.TicketRow], now: datetime
) -> TicketChanges:
    """Open and change the batch's tickets in memory, in the plan's order (another response joins a
    ticket, a revision updates or resolves it), on top of the `stored` ones (locked): each ticket
    is then written once, its history in one statement. Changes `stored`'s rows."""
    new: dict[str, repository.TicketRow] = {}
    changed: set[str] = set()
    history: list[dict[str, object]] = []
    events = []
    for step in steps:
        if isinstance(step, NewTicket):
            r = step.response
            new[step.ticket_id] = repository.TicketRow(
                step.ticket_id, 1, r.response_id, r.respondent_id, step.respondent_key, r.score, r.comment, "open",
                step.priority, None, None, r.channel, r.survey_id, now, now, None, None, step.first_contact_s,
                step.resolution_s,
            )  # fmt: skip
            continue
        row = new.get(step.ticket_id) or stored[step.ticket_id]
        resolve = TicketChange(status="resolved", resolution="score_revised")
        after = change_ticket(state_of(row), resolve if step.op == "resolve" else TicketChange(), now)
        before = row.status
        apply_state(row, after, now)
        row.score, row.comment = step.response.score, step.response.comment or row.comment
        if row.ticket_id not in new:
            changed.add(row.ticket_id)
        history.append(history_entry(row, before, SYSTEM_ACTOR, None, now))
        what: dict[str, str | None] = {"response_id": step.response.response_id, "score": str(step.response.score)}
        if step.op == "resolve":
            what |= {"status": "resolved", "resolution": "score_revised"}
        events.append(publisher.ticket_updated(topics, row, what, SYSTEM_ACTOR))  # a snapshot, taken now
    return TicketChanges([stored[t] for t in sorted(changed)], list(new.values()), history, events)


class TicketNotFound(Exception):
    pass


class StaleVersion(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"the ticket is at version {current}")
        self.current = current


def apply_state(row: repository.TicketRow, after: TicketState, now: datetime) -> None:
    row.status, row.assignee, row.resolution, row.version = (
        after.status,
        after.assignee,
        after.resolution,
        after.version,
    )
    row.first_contact_at, row.resolved_at, row.updated_at = after.first_contact_at, after.resolved_at, now


def history_entry(row: Any, before: str | None, actor: str, note: str | None, now: datetime) -> dict[str, object]:
    """The ticket_history row of the change that brought `row` to where it is."""
    return {
        "ticket_id": row.ticket_id, "version": row.version, "at": now, "actor": actor, "status_from": before,
        "status_to": row.status, "assignee": row.assignee, "resolution": row.resolution, "note": note,
    }  # fmt: skip


def state_of(row: Any) -> TicketState:
    return TicketState(row.status, row.assignee, row.resolution, row.version, row.first_contact_at, row.resolved_at)


async def update_ticket(
    conn: AsyncConnection,
    topics: Topics,
    ticket_id: str,
    change: TicketChange,
    expected_versions: Collection[int] | None,
    actor: str,
    now: datetime,
) -> repository.TicketRow:
    """Apply a support tool's change to a ticket, in the caller's transaction: the row is locked,
    the version checked (one of `expected_versions`; None: any), the transition checked; the
    history, the audit log and a TicketUpdated in the outbox are written with it. Returns the
    ticket as it now is."""
    row = (await repository.tickets_for_update(conn, [ticket_id])).get(ticket_id)
    if row is None:
        raise TicketNotFound(ticket_id)
    if expected_versions is not None and row.version not in expected_versions:
        raise StaleVersion(row.version)
    after = change_ticket(state_of(row), change, now)  # IllegalTransition
    before = replace(row)
    apply_state(row, after, now)
    await repository.write_tickets(conn, [row], [])
    await repository.insert_history(conn, [history_entry(row, before.status, actor, change.note, now)])
    what: dict[str, str | None] = {}
    if row.status != before.status:
        what["status"] = row.status
    if row.assignee != before.assignee:
        what["assignee"] = row.assignee
    if row.resolution != before.resolution:
        what["resolution"] = row.resolution
    if change.note is not None:
        what["note"] = "added"  # the note itself stays in follow-up's history
    await audit.record(conn, actor, "ticket.updated", ticket_id, {"version": after.version, **what})
    if before.first_contact_at is None and row.first_contact_at is not None:
        metrics.TICKET_FIRST_CONTACT_SECONDS.labels(row.priority).observe((now - row.created_at).total_seconds())
    if before.resolved_at is None and row.resolved_at is not None:
        metrics.TICKET_RESOLUTION_SECONDS.labels(row.priority).observe((now - row.created_at).total_seconds())
    await outbox.enqueue(conn, SCHEMA, [publisher.ticket_updated(topics, row, what, actor)])
    metrics.TICKET_CHANGES.labels(row.status).inc()
    return row


@dataclass(frozen=True, slots=True)
class WatchSlas:
    """Run every NPS_FOLLOWUP_SLA_CHECK_S within the loop's tick (`Every`): publish TicketSlaBreached
    for each ticket that just missed a deadline of its priority's SLA (once per ticket and deadline),
    and refresh the gauge of active tickets by age. The loop flushes the outbox after every tick,
    checked or not, which also publishes the API's TicketUpdated."""

    topics: Topics
    sla: Mapping[Priority, Sla]
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection) -> None:
        now = self.clock()
        outgoing = []
        for deadline in ("first_contact", "resolution"):
            seconds = {
                p: (s.first_contact_s if deadline == "first_contact" else s.resolution_s) for p, s in self.sla.items()
            }
            for row in await repository.mark_breaches(conn, deadline, seconds, now):
                outgoing.append(publisher.sla_breached(self.topics, row, deadline, now))
                metrics.TICKET_SLA_BREACHES.labels(row.priority, deadline).inc()
        await outbox.enqueue(conn, SCHEMA, outgoing)
        counts = await repository.active_by_age(conn, now)
        for priority in PRIORITIES:
            for bucket, _ in repository.AGE_BUCKETS:
                metrics.TICKETS_ACTIVE.labels(priority, bucket).set(counts.get((priority, bucket), 0))
