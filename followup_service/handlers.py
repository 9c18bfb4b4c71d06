"""Follow-up's consumer use case: route a batch of responses (one follow-up per response, one active
ticket per person, revisions re-routed) through each sub-domain's rules, and apply erasures."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service import metrics, publisher
from followup_service.contact.domain import ContactRules
from followup_service.contact.repository import contact_histories, lock_people
from followup_service.erasure import ERASURES, forget
from followup_service.experiments.assignment import arm_of
from followup_service.experiments.repository import assignments_of, insert_assignments
from followup_service.experiments.spec import Experiment
from followup_service.outcomes.domain import Transition, category_of
from followup_service.outcomes.repository import insert_transitions
from followup_service.referrals.domain import referral_code
from followup_service.routing.domain import BatchPlan, FollowUp, Routing, plan_batch
from followup_service.routing.matching import CATEGORY_NAMES, Facts
from followup_service.routing.messages import RenderFailed
from followup_service.routing.policy import PolicyHolder, Router
from followup_service.routing.repository import (
    PreviousAnswer,
    insert_new,
    previous_answers,
    reroute,
    routed_of,
    set_versions,
)
from followup_service.tables import SCHEMA, WrittenConcurrently
from followup_service.tickets.domain import NewTicket, TicketOp
from followup_service.tickets.handlers import history_entry, ticket_changes
from followup_service.tickets.repository import active_tickets, insert_history, tickets_for_update, write_tickets
from shared import outbox
from shared.consumer import Message, RetryBatch
from shared.db import InOrder
from shared.nps import classify
from shared.outbox import Outgoing
from shared.pseudonyms import Pseudonyms
from shared.settings import Topics
from shared.wire import Erased, Response, ResponseWire, Revised, Submitted

log = logging.getLogger(__name__)


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
        answers: Mapping[str, PreviousAnswer],
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
        stored = writes.then(partial(tickets_for_update, conn, changing))
        new: list[FollowUp] = []
        for start in range(0, len(plan.new), WRITE_SLICE):
            rendered = []
            for at in range(start, min(start + WRITE_SLICE, len(plan.new)), YIELD_EVERY):
                rendered += [self.with_message(f, router) for f in plan.new[at : at + YIELD_EVERY]]
                await asyncio.sleep(0)  # the statements' next step
            writes.then(partial(insert_new, conn, rendered, key))
            new += rendered
        plan.new = new
        plan.rerouted = [self.with_message(f, router) for f in plan.rerouted]
        writes.then(partial(reroute, conn, plan.rerouted))
        scores = {e.response_id: e.score for e in events if e.response_id in plan.revised}
        writes.then(partial(set_versions, conn, plan.revised, scores))
        # The statements with most for PostgreSQL to do are queued first; the events, which only
        # end up in one outbox row per topic, are built while it works through them.
        writes.then(partial(insert_transitions, conn, transitions_of(plan.new, answers, key)))
        writes.then(partial(insert_assignments, conn, assignments_of(plan.new + plan.rerouted, key)))
        await asyncio.sleep(0)
        changes = ticket_changes(self.topics, plan.ticket_steps, await stored, now)
        writes.then(partial(write_tickets, conn, changes.changed, changes.new))
        writes.then(partial(insert_history, conn, changes.history))

        opened_by = {t.ticket_id: t.response for t in plan.tickets}  # the response that opened each ticket
        outgoing: list[Outgoing] = []
        routed_now = plan.new + plan.rerouted
        for start in range(0, len(routed_now), YIELD_EVERY):
            for f in routed_now[start : start + YIELD_EVERY]:
                outgoing += publisher.outgoing(self.topics, f, opened_by.get(f.ticket_id or "") is f.response)
            await asyncio.sleep(0)
        rows = outbox.rows_of(outgoing + changes.events)
        writes.then(partial(outbox.insert_rows, conn, SCHEMA, rows))

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseWire]]) -> None:
        now = self.clock()
        key = self.pseudonyms.key
        requested = self.pseudonyms.latest_requests(m.event for m in batch)
        erasures = await ERASURES.record(conn, requested)
        events = [m.event for m in batch if isinstance(m.event, Submitted | Revised)]
        keys = {key(e.respondent_id) for e in events}
        erasures.update(await ERASURES.of(conn, keys - erasures.keys()))
        routed = await routed_of(conn, (e.response_id for e in events))
        active = await active_tickets(conn, keys)
        # Each person's latest answer before the batch's: an answer routed before and delivered again
        # in this batch is history, not new (excluding it hid it, and its person's next answer had
        # no previous one); a revision is the answer it revises, so it is excluded.
        fresh = (e.response_id for e in events if not (isinstance(e, Submitted) and e.response_id in routed))
        answers = await previous_answers(conn, keys, fresh)
        previous = {k: a.score for k, a in answers.items()}
        await lock_people(conn, keys)
        contacts = await contact_histories(conn, keys, now - self.contact.lookback)
        router = self.policy.current.router  # one policy for the whole batch, even across a reload

        def decide(event: Response, previous_score: int | None) -> Routing:
            return router.route(facts_of(event, previous_score))

        def assign(experiment: Experiment, rkey: str) -> str:
            return arm_of(self.pseudonyms, experiment.experiment_id, rkey, experiment.weights)

        plan = plan_batch(events, routed, active, erasures, key, now, decide, previous, contacts, self.contact, assign)
        try:
            async with InOrder() as writes:
                await self.write_plan(conn, writes, plan, answers, router, events, now)
        except WrittenConcurrently as exc:
            # Another consumer (before a rebalance) routed some of them: start again on top of it.
            raise RetryBatch(f"{exc} written concurrently") from exc

        erased_ids = [m.event.respondent_id for m in batch if isinstance(m.event, Erased)]
        forgotten = await forget(conn, requested, erased_ids, now)
        await insert_history(conn, [history_entry(t, None, "erasure", None, now) for t in forgotten.closed])
        closing = {"status": "closed", "resolution": "erased"}
        closed = [publisher.ticket_updated(self.topics, t, dict(closing), "erasure") for t in forgotten.closed]
        await outbox.enqueue(conn, SCHEMA, closed)

        for kind, n in Counter(f.kind for f in plan.new + plan.rerouted).items():
            metrics.FOLLOWUPS_CREATED.labels(kind).inc(n)
        arms = Counter((f.experiment_id, f.arm) for f in plan.new + plan.rerouted if f.experiment_id and f.arm)
        for (experiment, arm), n in arms.items():
            metrics.EXPERIMENT_FOLLOWUPS.labels(experiment, arm).inc(n)
        for op, n in Counter(op.op for op in plan.ticket_ops).items():
            metrics.TICKETS_CHANGED_BY_RESPONSES.labels(op).inc(n)
        metrics.FOLLOWUPS_ERASED.inc(forgotten.followups)
        metrics.FOLLOWUPS_DUPLICATE.inc(plan.duplicates)
        metrics.FOLLOWUPS_SKIPPED_ERASED.inc(plan.skipped_erased)


WRITE_SLICE = 2_500  # rows built between two statements of a batch's writes


# Python work between two turns of the event loop in a batch's writes (~3 ms): each turn lets the
# statement under way take its next step (asyncpg waits for PostgreSQL several times per statement).
YIELD_EVERY = 50


def facts_of(event: Response, previous_score: int | None) -> Facts:
    """What the policy's rules look at, from a response and the person's previous score."""
    return Facts.of(
        event.score,
        event.channel,
        event.survey_id,
        event.attributes,
        event.comment,
        previous_score,
        getattr(event, "identity", "server"),  # a revision comes from a server
    )


def variables_of(event: Response, referral_code: str | None = None) -> dict[str, object]:
    """What a message template may use (followup_service/routing/messages.VARIABLES; the locale is added
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
    new: Sequence[FollowUp], answers: Mapping[str, PreviousAnswer], key: Callable[[str], str]
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
        last[rkey] = PreviousAnswer(
            response.response_id, response.score, response.submitted_at, f.kind, f.status, None, f.ticket_id is not None
        )
    return moves
