"""Follow-up use cases: route a batch of responses (one follow-up per response, one active ticket
per person, revisions re-routed), apply erasures, and change tickets for support."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service import metrics, publisher, repository
from followup_service.domain import (
    PRIORITIES,
    BatchPlan,
    ContactRules,
    FollowUp,
    NewTicket,
    Priority,
    Routing,
    TicketChange,
    TicketOp,
    TicketState,
    change_ticket,
    plan_batch,
    referral_code,
)
from followup_service.messages import RenderFailed
from followup_service.outcomes import Transition, category_of
from followup_service.policy import CATEGORY_NAMES, Facts, PolicyHolder, Router
from followup_service.settings import Sla
from shared import audit, outbox
from shared.consumer import Message, RetryBatch
from shared.db import InOrder
from shared.nps import classify
from shared.outbox import Outgoing
from shared.pseudonyms import Pseudonyms
from shared.settings import Topics
from shared.wire import Erased, Response, ResponseWire, Revised, Submitted

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "follow-up"  # who the history and TicketUpdated name for changes the loop makes


@dataclass(frozen=True, slots=True)
class RouteResponses:
    topics: Topics
    pseudonyms: Pseudonyms
    clock: Callable[[], datetime]
    policy: PolicyHolder
    contact: ContactRules

    def with_message(self, followup: FollowUp, router: Router) -> FollowUp:
        """The follow-up with its message rendered, or marked failed with the reason (counted):
        a template that fails never loses the follow-up."""
        code = followup.referral_code
        if followup.kind == "referral" and followup.status == "created":
            code = referral_code(self.pseudonyms.token("referral", followup.followup_id))
        if followup.template is None:
            return followup if code == followup.referral_code else followup.with_message(None, code)
        try:
            variables = variables_of(followup.response, code)
            rendered = router.render(followup.template, variables)
        except (RenderFailed, KeyError) as exc:
            metrics.MESSAGES_FAILED.inc()
            log.warning("follow-up %s: message not rendered: %s", followup.followup_id, exc)
            return replace(followup, referral_code=code, status="failed", reason=str(exc)[:500])
        return followup.with_message(rendered, code)

    async def write_plan(
        self,
        conn: AsyncConnection,
        writes: InOrder,
        plan: BatchPlan,
        answers: Mapping[str, repository.PreviousAnswer],
        router: Router,
        events: Sequence[Response],
        now: datetime,
    ) -> None:
        """Carry out a batch's plan: messages rendered, follow-ups, tickets, outcome rows and events
        written. Each statement is queued as soon as its rows are built, so PostgreSQL works
        through one while the next is prepared (`writes` runs them in this order)."""
        key = self.pseudonyms.key
        opened = {s.ticket_id for s in plan.ticket_steps if isinstance(s, NewTicket)}
        changing = {s.ticket_id for s in plan.ticket_steps if isinstance(s, TicketOp)} - opened
        stored = writes.then(partial(repository.tickets_for_update, conn, changing))
        new: list[FollowUp] = []
        for start in range(0, len(plan.new), WRITE_SLICE):
            rendered = []
            for at in range(start, min(start + WRITE_SLICE, len(plan.new)), YIELD_EVERY):
                rendered += [self.with_message(f, router) for f in plan.new[at : at + YIELD_EVERY]]
                await asyncio.sleep(0)  # the statements' next step
            writes.then(partial(repository.insert_new, conn, rendered, key))
            new += rendered
        plan.new = new
        plan.rerouted = [self.with_message(f, router) for f in plan.rerouted]
        writes.then(partial(repository.reroute, conn, plan.rerouted))
        scores = {e.response_id: e.score for e in events if e.response_id in plan.revised}
        writes.then(partial(repository.set_versions, conn, plan.revised, scores))
        # The statements with most for PostgreSQL to do are queued first; the events, which only
        # end up in one outbox row per topic, are built while it works through them.
        writes.then(partial(repository.insert_transitions, conn, transitions_of(plan.new, answers, key)))
        await asyncio.sleep(0)
        changes = ticket_changes(self.topics, plan.ticket_steps, await stored, now)
        writes.then(partial(repository.write_tickets, conn, changes.changed, changes.new))
        writes.then(partial(repository.insert_history, conn, changes.history))

        opened_by = {t.ticket_id: t.response for t in plan.tickets}  # the response that opened each ticket
        outgoing: list[Outgoing] = []
        routed_now = plan.new + plan.rerouted
        for start in range(0, len(routed_now), YIELD_EVERY):
            for f in routed_now[start : start + YIELD_EVERY]:
                outgoing += publisher.outgoing(self.topics, f, opened_by.get(f.ticket_id or "") is f.response)
            await asyncio.sleep(0)
        rows = outbox.rows_of(outgoing + changes.events)
        writes.then(partial(outbox.insert_rows, conn, repository.SCHEMA, rows))

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseWire]]) -> None:
        now = self.clock()
        key = self.pseudonyms.key
        requested = self.pseudonyms.latest_requests(m.event for m in batch)
        erasures = await repository.ERASURES.record(conn, requested)
        events = [m.event for m in batch if isinstance(m.event, Submitted | Revised)]
        keys = {key(e.respondent_id) for e in events}
        erasures.update(await repository.ERASURES.of(conn, keys - erasures.keys()))
        routed = await repository.routed_of(conn, (e.response_id for e in events))
        active = await repository.active_tickets(conn, keys)
        answers = await repository.previous_answers(conn, keys, (e.response_id for e in events))
        previous = {k: a.score for k, a in answers.items()}
        await repository.lock_people(conn, keys)
        contacts = await repository.contact_histories(conn, keys, now - self.contact.lookback)
        router = self.policy.current.router  # one policy for the whole batch, even across a reload

        def decide(event: Response, previous_score: int | None) -> Routing:
            return router.route(facts_of(event, previous_score))

        plan = plan_batch(events, routed, active, erasures, key, now, decide, previous, contacts, self.contact)
        try:
            async with InOrder() as writes:
                await self.write_plan(conn, writes, plan, answers, router, events, now)
        except repository.WrittenConcurrently as exc:
            # Another consumer (before a rebalance) routed some of them: start again on top of it.
            raise RetryBatch(f"{exc} written concurrently") from exc

        erased_ids = [m.event.respondent_id for m in batch if isinstance(m.event, Erased)]
        forgotten = await repository.forget(conn, requested, erased_ids, now)
        await repository.insert_history(conn, [history_entry(t, None, "erasure", None, now) for t in forgotten.closed])
        closing = {"status": "closed", "resolution": "erased"}
        closed = [publisher.ticket_updated(self.topics, t, dict(closing), "erasure") for t in forgotten.closed]
        await outbox.enqueue(conn, repository.SCHEMA, closed)

        for kind, n in Counter(f.kind for f in plan.new + plan.rerouted).items():
            metrics.FOLLOWUPS_CREATED.labels(kind).inc(n)
        for op, n in Counter(op.op for op in plan.ticket_ops).items():
            metrics.TICKETS_CHANGED_BY_RESPONSES.labels(op).inc(n)
        metrics.FOLLOWUPS_ERASED.inc(forgotten.followups)
        metrics.FOLLOWUPS_DUPLICATE.inc(plan.duplicates)
        metrics.FOLLOWUPS_SKIPPED_ERASED.inc(plan.skipped_erased)


WRITE_SLICE = 2_500  # rows built between two statements of a batch's writes
# Python work between two turns of the event loop in a batch's writes (~3 ms): each turn lets the
# statement under way take its next step (asyncpg waits for PostgreSQL several times per statement).
YIELD_EVERY = 50


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


# --- tickets ---


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
    expected_version: int | None,
    actor: str,
    now: datetime,
) -> repository.TicketRow:
    """Apply a support tool's change to a ticket, in the caller's transaction: the row is locked,
    the version checked (None: any), the transition checked; the history, the audit log and a
    TicketUpdated in the outbox are written with it. Returns the ticket as it now is."""
    row = (await repository.tickets_for_update(conn, [ticket_id])).get(ticket_id)
    if row is None:
        raise TicketNotFound(ticket_id)
    if expected_version is not None and row.version != expected_version:
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
    await outbox.enqueue(conn, repository.SCHEMA, [publisher.ticket_updated(topics, row, what, actor)])
    metrics.TICKET_CHANGES.labels(row.status).inc()
    return row


@dataclass(frozen=True, slots=True)
class WatchSlas:
    """The loop's tick: publish TicketSlaBreached for each ticket that just missed a deadline of its
    priority's SLA (once per ticket and deadline), and refresh the gauge of active tickets by age.
    The loop flushes the outbox after every tick, which also publishes the API's TicketUpdated."""

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
        await outbox.enqueue(conn, repository.SCHEMA, outgoing)
        counts = await repository.active_by_age(conn, now)
        for priority in PRIORITIES:
            for bucket, _ in repository.AGE_BUCKETS:
                metrics.TICKETS_ACTIVE.labels(priority, bucket).set(counts.get((priority, bucket), 0))


def facts_of(event: Response, previous_score: int | None) -> Facts:
    """What the policy's rules look at, from a response and the person's previous score."""
    return Facts.of(event.score, event.channel, event.survey_id, event.attributes, event.comment, previous_score)


def variables_of(event: Response, referral_code: str | None = None) -> dict[str, object]:
    """What a message template may use (followup_service/messages.VARIABLES; the locale is added
    by the renderer)."""
    return {
        "referral_code": referral_code,
        "score": event.score,
        "category": CATEGORY_NAMES[classify(event.score)],
        "comment": event.comment,
        "channel": event.channel,
        "survey_id": event.survey_id,
        "attributes": dict(event.attributes),
        "response_id": event.response_id,
    }


def transitions_of(
    new: Sequence[FollowUp], answers: Mapping[str, repository.PreviousAnswer], key: Callable[[str], str]
) -> list[Transition]:
    """For each newly routed answer of a person who answered before: the move, and what the
    previous answer got. Several answers of one person in a batch chain in order."""
    last = dict(answers)
    moves = []
    for f in new:
        if f.reason == "erased":
            continue  # an erased person's answers leave the outcomes
        response = f.response
        assert isinstance(response, Submitted)  # new follow-ups are submissions
        rkey = key(response.respondent_id)
        before = last.get(rkey)
        if before is not None:
            resolved = before.ticket_resolved_at
            moves.append(
                Transition(
                    response_id=response.response_id,
                    respondent_key=rkey,
                    previous_response_id=before.response_id,
                    previous_category=category_of(before.score),
                    new_category=category_of(response.score),
                    days_between=(response.submitted_at - before.submitted_at).total_seconds() / 86_400,
                    followup_kind=before.kind,
                    followup_status=before.status,
                    ticket_resolved_before=(resolved is not None and resolved <= response.submitted_at)
                    if before.had_ticket
                    else None,
                    answered_at=response.submitted_at,
                    channel=response.channel,
                    survey_id=response.survey_id,
                )
            )
        last[rkey] = repository.PreviousAnswer(
            response.response_id, response.score, response.submitted_at, f.kind, f.status, None, f.ticket_id is not None
        )
    return moves
