"""Routing rules. Pure: which follow-up each response of a batch gets, on top of what is known."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from followup_service.contact.domain import ContactHistory, ContactRules
from followup_service.experiments.spec import Experiment
from followup_service.ids import stable_hex
from followup_service.routing.messages import Rendered
from followup_service.tickets.domain import NewTicket, Priority, TicketOp, revision_ticket_id, ticket_id
from shared.events import FollowUpKind
from shared.nps import Category, classify
from shared.wire import Response, Revised, Submitted

ROUTES: dict[Category, FollowUpKind] = {
    Category.PROMOTER: "referral",
    Category.PASSIVE: "education",
    Category.DETRACTOR: "ticket",
}


def route(score: int) -> FollowUpKind:
    return ROUTES[classify(score)]


def followup_id(response_id: str, version: int = 1) -> str:
    """A response's follow-up; a revision that re-routes it gets another (its own version's)."""
    name = f"followup:{response_id}" if version == 1 else f"followup:{response_id}:v{version}"
    return f"fu_{stable_hex(name)}"


@dataclass(frozen=True, slots=True)
class Routing:
    """What the policy decided for a response: the action (the follow-up's kind), the ticket
    priority, and which rule of which policy version decided it (None: no rule matched)."""

    action: str
    priority: Priority = "normal"
    rule: str | None = None
    policy_version: str | None = None
    template: str | None = None
    first_contact_s: float | None = None  # a ticket rule's own SLA (None: its priority's)
    resolution_s: float | None = None
    experiment: Experiment | None = None  # the rule's holdout or experiment: its arm decides


Decide = Callable[[Response, "int | None"], Routing]


# Which arm of an experiment a person (by respondent key) is in: experiments/assignment.arm_of.
Assign = Callable[[Experiment, str], str]


def no_experiments(experiment: Experiment, respondent_key: str) -> str:
    raise AssertionError(f"experiment {experiment.experiment_id} planned without assignment")


def by_category(event: Response, previous_score: int | None) -> Routing:
    """The default policy's decisions, without a policy file (for tests of the routing rules)."""
    return Routing(route(event.score))


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class FollowUp:
    """What one response is routed to (on its latest version): everything else is the response."""

    followup_id: str
    kind: FollowUpKind
    response: Response
    created_at: datetime
    ticket_id: str | None = None
    version: int = 1
    rule: str | None = None
    policy_version: str | None = None
    template: str | None = None  # the message to render for it (the handler renders it)
    message: Rendered | None = None
    # failed: its message could not be rendered; suppressed: the contact rules (or the policy) held it
    # back; held_out: its experiment's arm gets nothing from the rule
    status: Literal["created", "failed", "suppressed", "held_out"] = "created"
    reason: str | None = None
    eligible_at: datetime | None = None  # suppressed by the contact rules: when it would have been allowed
    referral_code: str | None = None  # a referral follow-up's code, for the sign-ups it brings
    experiment_id: str | None = None  # the rule's experiment, and the person's arm in it
    arm: str | None = None

    def with_message(self, message: Rendered | None, referral_code: str | None) -> FollowUp:
        """The same follow-up with its message and code (dataclasses.replace, at a tenth of its cost:
        it runs once per response)."""
        return FollowUp(
            self.followup_id, self.kind, self.response, self.created_at, self.ticket_id, self.version, self.rule,
            self.policy_version, self.template, message, self.status, self.reason, self.eligible_at, referral_code,
            self.experiment_id, self.arm,
        )  # fmt: skip


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class Routed:
    """What follow-up already knows of a response it routed."""

    response_id: str
    respondent_key: str
    kind: FollowUpKind
    version: int
    ticket_id: str | None
    score: int


@dataclass
class BatchPlan:
    new: list[FollowUp] = field(default_factory=list)  # responses routed for the first time
    rerouted: list[FollowUp] = field(default_factory=list)  # revisions that changed the category
    revised: dict[str, int] = field(default_factory=dict)  # same category: response_id -> new version
    # Tickets opened and changed, in the order they must happen: a revision can resolve a person's
    # ticket and the next response open their new one, which the one-active-ticket rule allows
    # only in that order.
    ticket_steps: list[NewTicket | TicketOp] = field(default_factory=list)
    skipped_erased: int = 0
    duplicates: int = 0

    @property
    def tickets(self) -> list[NewTicket]:
        return [s for s in self.ticket_steps if isinstance(s, NewTicket)]

    @property
    def ticket_ops(self) -> list[TicketOp]:
        return [s for s in self.ticket_steps if isinstance(s, TicketOp)]


def plan_batch(
    events: Sequence[Response],
    routed: Mapping[str, Routed],
    active: Mapping[str, str],
    erasures: Mapping[str, datetime],
    key: Callable[[str], str],
    now: datetime,
    decide: Decide = by_category,
    previous: Mapping[str, int] | None = None,
    contacts: Mapping[str, ContactHistory] | None = None,
    rules: ContactRules | None = None,
    assign: Assign = no_experiments,
) -> BatchPlan:
    """Route a batch, in order, on top of what is known: `routed` (by response_id), `active` (the
    active ticket of each respondent key) and the erasures (by respondent key). Pure; the rules:

    - a response is routed once; a redelivered one, or a revision no newer than what was routed,
      changes nothing;
    - an erased person (erasure at or after the event) is never routed: a new response of theirs is
      recorded as suppressed with reason `erased`, a revision changes nothing;
    - a respondent has at most one active ticket: a detractor response while one is open joins it;
    - a revision in the same category updates the ticket (if any); out of detractor it resolves the
      response's active ticket and is routed again; into detractor it gets routed again too.

    What a response is routed to is `decide`'s (the policy's), given the person's previous score
    (`previous`, by respondent key; None: their first answer); an action `ticket` opens a ticket.
    A rule with an experiment: the person's arm (`assign`) decides; a held-out arm gets nothing
    (status `held_out`), and sends nothing the contact rules count."""
    planner = _Planner(routed, active, key, now, decide, previous, contacts, rules or ContactRules(), assign)
    for event in events:
        rkey = key(event.respondent_id)
        at = event.submitted_at if isinstance(event, Submitted) else event.revised_at
        erased_at = erasures.get(rkey)
        if erased_at is not None and erased_at >= at:
            planner.erased(event, rkey)
        elif isinstance(event, Submitted):
            planner.submitted(event, rkey)
        else:
            planner.revised(event, rkey)
    return planner.plan


class _Planner:
    """plan_batch's state as it goes through the batch: what is routed, each person's active ticket,
    previous score and contact history, all as the events before the current one left them."""

    __slots__ = (
        "active", "assign", "contacts", "decide", "histories", "key", "now", "plan", "previous", "routed", "rules",
    )  # fmt: skip

    def __init__(
        self,
        routed: Mapping[str, Routed],
        active: Mapping[str, str],
        key: Callable[[str], str],
        now: datetime,
        decide: Decide,
        previous: Mapping[str, int] | None,
        contacts: Mapping[str, ContactHistory] | None,
        rules: ContactRules,
        assign: Assign,
    ) -> None:
        self.plan = BatchPlan()
        self.assign = assign
        self.routed = dict(routed)
        self.active = dict(active)
        self.key, self.now, self.decide, self.rules = key, now, decide, rules
        self.previous = dict(previous or {})
        self.contacts = contacts or {}
        self.histories: dict[str, ContactHistory] = {}  # copies, made when a person's history is first needed

    def history_of(self, rkey: str) -> ContactHistory:
        history = self.histories.get(rkey)
        if history is None:
            stored = self.contacts.get(rkey)
            history = self.histories[rkey] = (
                ContactHistory(stored.opted_out, list(stored.sent)) if stored is not None else ContactHistory()
            )
        return history

    def ticket_for(self, event: Response, rkey: str, routing: Routing) -> str:
        if rkey in self.active:
            self.plan.ticket_steps.append(TicketOp(self.active[rkey], "attach", event))
            return self.active[rkey]
        tid = ticket_id(event.response_id) if isinstance(event, Submitted) else revision_ticket_id(event)
        self.plan.ticket_steps.append(
            NewTicket(tid, event, rkey, routing.priority, routing.first_contact_s, routing.resolution_s)
        )
        self.active[rkey] = tid
        return tid

    def follow_up(self, event: Response, rkey: str, fid: str, version: int) -> FollowUp:
        routing = self.decide(event, self.previous.get(rkey))
        if routing.experiment is None:
            return self.carry_out(event, rkey, fid, version, routing)
        experiment = routing.experiment
        arm = experiment.arm(self.assign(experiment, rkey))
        if arm.held_out:
            # Nothing from the rule, nothing the contact rules count; the kind says what was held back.
            return FollowUp(
                fid, routing.action, event, self.now, None, version, routing.rule, routing.policy_version,
                status="held_out", reason=f"experiment {experiment.experiment_id}: arm {arm.name}",
                experiment_id=experiment.experiment_id, arm=arm.name,
            )  # fmt: skip
        f = self.carry_out(event, rkey, fid, version, replace(routing, action=arm.action, template=arm.template))
        f.experiment_id, f.arm = experiment.experiment_id, arm.name
        return f

    def carry_out(self, event: Response, rkey: str, fid: str, version: int, routing: Routing) -> FollowUp:
        history = self.history_of(rkey)
        action, rule, policy, now = routing.action, routing.rule, routing.policy_version, self.now
        if action == "none":
            return FollowUp(
                fid, action, event, now, None, version, rule, policy, status="suppressed", reason="policy_none"
            )
        if action == "ticket":
            # A detractor always reaches support; only the message to an opted-out person is dropped.
            tid = self.ticket_for(event, rkey, routing)
            template = None if history.opted_out else routing.template
            return FollowUp(fid, action, event, now, tid, version, rule, policy, template)
        verdict = self.rules.verdict(history, action, now)
        if not verdict.allowed:
            return FollowUp(
                fid, action, event, now, None, version, rule, policy,
                status="suppressed", reason=verdict.reason, eligible_at=verdict.eligible_at,
            )  # fmt: skip
        history.sent.append((action, now))
        return FollowUp(fid, action, event, now, None, version, rule, policy, routing.template)

    def erased(self, event: Response, rkey: str) -> None:
        self.plan.skipped_erased += 1
        rid = event.response_id
        if isinstance(event, Submitted) and rid not in self.routed:
            # Recorded, so the answer about this response says why nothing happened; without
            # the person's id (the handler stores none for reason `erased`).
            f = FollowUp(followup_id(rid), "none", event, self.now, status="suppressed", reason="erased")
            self.plan.new.append(f)
            self.routed[rid] = Routed(rid, rkey, f.kind, 1, None, event.score)

    def submitted(self, event: Submitted, rkey: str) -> None:
        rid = event.response_id
        if rid in self.routed:
            self.plan.duplicates += 1
            return
        f = self.follow_up(event, rkey, followup_id(rid), 1)
        self.plan.new.append(f)
        self.routed[rid] = Routed(rid, rkey, f.kind, 1, f.ticket_id, event.score)
        self.previous[rkey] = event.score

    def revised(self, event: Revised, rkey: str) -> None:
        rid = event.response_id
        known = self.routed.get(rid)
        if known is None or event.version <= known.version:
            self.plan.duplicates += 1  # a stale or repeated revision (or one of a response never routed)
            return
        if classify(event.score) == classify(known.score):
            if known.ticket_id is not None:
                self.plan.ticket_steps.append(TicketOp(known.ticket_id, "revise", event))
            self.plan.revised[rid] = event.version
            self.routed[rid] = Routed(rid, rkey, known.kind, event.version, known.ticket_id, event.score)
            return
        if known.ticket_id is not None and self.active.get(rkey) == known.ticket_id:
            self.plan.ticket_steps.append(TicketOp(known.ticket_id, "resolve", event))
            del self.active[rkey]
        self.plan.revised.pop(rid, None)  # an earlier revision of this batch is superseded
        f = self.follow_up(event, rkey, followup_id(rid, event.version), event.version)
        self.plan.rerouted.append(f)
        self.routed[rid] = Routed(rid, rkey, f.kind, event.version, f.ticket_id, event.score)
