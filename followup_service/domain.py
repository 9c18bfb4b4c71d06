"""Routing rules. Pure: which follow-up a response gets, and its stable ids."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from followup_service.messages import Rendered
from shared.events import FollowUpKind
from shared.nps import Category, classify
from shared.wire import Response, Revised, Submitted

# Ids derive from the response_id, so a redelivered response maps to the same follow-up and
# ticket, and a consumer seeing a ticket event twice can tell it is the same ticket.
_NAMESPACE = uuid.UUID("6f1c1f8e-5b1a-4c53-9d3e-2b8f0c4a7e11")


def stable_hex(name: str) -> str:
    """`uuid.uuid5(_NAMESPACE, name).hex`, without building UUID objects (twice as quick, and
    every response needs one or two)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


TicketStatus = Literal["open", "in_progress", "contacted", "resolved", "closed"]
TICKET_STATUSES: tuple[TicketStatus, ...] = get_args(TicketStatus)
Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)

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


def ticket_id(response_id: str) -> str:
    return f"tk_{stable_hex('ticket:' + response_id)}"


def referral_code(token: bytes) -> str:
    """A referral code from an unguessable token: 16 URL-safe characters (80 bits), `r` first."""
    return "r" + base64.b32encode(token[:10]).decode().lower()


def revision_ticket_id(event: Revised) -> str:
    """The ticket a revision into detractor opens: stable per response and version."""
    return f"tk_{stable_hex(f'ticket:{event.response_id}:v{event.version}')}"


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


Decide = Callable[[Response, "int | None"], Routing]


def by_category(event: Response, previous_score: int | None) -> Routing:
    """The default policy's decisions, without a policy file (for tests of the routing rules)."""
    return Routing(route(event.score))


@dataclass
class ContactHistory:
    """What the contact rules look at for one person: an opt-out, and the messages sent to them
    (kind, when), oldest first."""

    opted_out: bool = False
    sent: list[tuple[str, datetime]] = field(default_factory=list)


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class Verdict:
    allowed: bool
    reason: str | None = None  # opted_out, throttled
    eligible_at: datetime | None = None  # when a message of that kind would be allowed (never: None)


@dataclass(frozen=True, slots=True)
class ContactRules:
    """Survey fatigue and consent: at most one message of a kind per `min_days_between` (per kind,
    `default_min_days` otherwise), at most `max_per_window` messages in any `window_days`, none after
    an opt-out. Tickets are not messages: a detractor always reaches support."""

    default_min_days: float = 30
    min_days_between: Mapping[str, float] = field(default_factory=dict)
    max_per_window: int = 3
    window_days: float = 90

    def gap(self, kind: str) -> timedelta:
        return timedelta(days=self.min_days_between.get(kind, self.default_min_days))

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.window_days)

    @property
    def lookback(self) -> timedelta:
        """How far back the history must reach for every rule."""
        return max([self.window, timedelta(days=self.default_min_days)] + [self.gap(k) for k in self.min_days_between])

    def verdict(self, history: ContactHistory, kind: str, now: datetime, any_kind: bool = False) -> Verdict:
        """May a message of `kind` go to this person now? With `any_kind`: a message of any kind
        (the gap is the default one, counted from their latest message whatever its kind)."""
        if history.opted_out:
            return Verdict(False, "opted_out")
        waits = []
        gap = timedelta(days=self.default_min_days) if any_kind else self.gap(kind)
        same = [at for k, at in history.sent if (any_kind or k == kind) and at > now - gap]
        if same:
            waits.append(max(same) + gap)
        recent = sorted(at for _, at in history.sent if at > now - self.window)
        if len(recent) >= self.max_per_window:
            waits.append(recent[len(recent) - self.max_per_window] + self.window)
        if waits:
            return Verdict(False, "throttled", max(waits))
        return Verdict(True)


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
    # failed: its message could not be rendered; suppressed: the contact rules (or the policy) held it back
    status: Literal["created", "failed", "suppressed"] = "created"
    reason: str | None = None
    eligible_at: datetime | None = None  # suppressed by the contact rules: when it would have been allowed
    referral_code: str | None = None  # a referral follow-up's code, for the sign-ups it brings

    def with_message(self, message: Rendered | None, referral_code: str | None) -> FollowUp:
        """The same follow-up with its message and code (dataclasses.replace, at a tenth of its cost:
        it runs once per response)."""
        return FollowUp(
            self.followup_id, self.kind, self.response, self.created_at, self.ticket_id, self.version, self.rule,
            self.policy_version, self.template, message, self.status, self.reason, self.eligible_at, referral_code,
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


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class NewTicket:
    ticket_id: str
    response: Response
    respondent_key: str
    priority: Priority = "normal"
    first_contact_s: float | None = None  # its rule's own SLA (None: the priority's)
    resolution_s: float | None = None


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class TicketOp:
    """A change the loop makes to a ticket: another detractor response of the same person joins
    their active ticket (`attach`), a revision in the same category updates its score and comment
    (`revise`), a revision out of detractor resolves it (`resolve`, resolution `score_revised`)."""

    ticket_id: str
    op: Literal["attach", "revise", "resolve"]
    response: Response


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
    (`previous`, by respondent key; None: their first answer); an action `ticket` opens a ticket."""
    plan = BatchPlan()
    routed = dict(routed)
    active = dict(active)
    previous = dict(previous or {})
    rules = rules or ContactRules()
    stored_histories = contacts or {}
    histories: dict[str, ContactHistory] = {}  # copies, made when a person's history is first needed

    def history_of(rkey: str) -> ContactHistory:
        history = histories.get(rkey)
        if history is None:
            stored = stored_histories.get(rkey)
            history = histories[rkey] = (
                ContactHistory(stored.opted_out, list(stored.sent)) if stored is not None else ContactHistory()
            )
        return history

    def ticket_for(event: Response, rkey: str, routing: Routing) -> str:
        if rkey in active:
            plan.ticket_steps.append(TicketOp(active[rkey], "attach", event))
            return active[rkey]
        tid = ticket_id(event.response_id) if isinstance(event, Submitted) else revision_ticket_id(event)
        plan.ticket_steps.append(
            NewTicket(tid, event, rkey, routing.priority, routing.first_contact_s, routing.resolution_s)
        )
        active[rkey] = tid
        return tid

    def follow_up(event: Response, rkey: str, fid: str, version: int) -> FollowUp:
        routing = decide(event, previous.get(rkey))
        history = history_of(rkey)
        action, rule, policy = routing.action, routing.rule, routing.policy_version
        if action == "none":
            return FollowUp(
                fid, action, event, now, None, version, rule, policy, status="suppressed", reason="policy_none"
            )
        if action == "ticket":
            # A detractor always reaches support; only the message to an opted-out person is dropped.
            tid = ticket_for(event, rkey, routing)
            template = None if history.opted_out else routing.template
            return FollowUp(fid, action, event, now, tid, version, rule, policy, template)
        verdict = rules.verdict(history, action, now)
        if not verdict.allowed:
            return FollowUp(
                fid, action, event, now, None, version, rule, policy,
                status="suppressed", reason=verdict.reason, eligible_at=verdict.eligible_at,
            )  # fmt: skip
        history.sent.append((action, now))
        return FollowUp(fid, action, event, now, None, version, rule, policy, routing.template)

    for event in events:
        rkey = key(event.respondent_id)
        at = event.submitted_at if isinstance(event, Submitted) else event.revised_at
        erased_at = erasures.get(rkey)
        rid = event.response_id
        if erased_at is not None and erased_at >= at:
            plan.skipped_erased += 1
            if isinstance(event, Submitted) and rid not in routed:
                # Recorded, so the answer about this response says why nothing happened; without
                # the person's id (the handler stores none for reason `erased`).
                f = FollowUp(followup_id(rid), "none", event, now, status="suppressed", reason="erased")
                plan.new.append(f)
                routed[rid] = Routed(rid, rkey, f.kind, 1, None, event.score)
            continue
        known = routed.get(rid)
        if isinstance(event, Submitted):
            if known is not None:
                plan.duplicates += 1
                continue
            f = follow_up(event, rkey, followup_id(rid), 1)
            plan.new.append(f)
            routed[rid] = Routed(rid, rkey, f.kind, 1, f.ticket_id, event.score)
            previous[rkey] = event.score
            continue
        if known is None or event.version <= known.version:
            plan.duplicates += 1  # a stale or repeated revision (or one of a response never routed)
            continue
        if classify(event.score) == classify(known.score):
            if known.ticket_id is not None:
                plan.ticket_steps.append(TicketOp(known.ticket_id, "revise", event))
            plan.revised[rid] = event.version
            routed[rid] = Routed(rid, rkey, known.kind, event.version, known.ticket_id, event.score)
            continue
        if known.ticket_id is not None and active.get(rkey) == known.ticket_id:
            plan.ticket_steps.append(TicketOp(known.ticket_id, "resolve", event))
            del active[rkey]
        plan.revised.pop(rid, None)  # an earlier revision of this batch is superseded
        f = follow_up(event, rkey, followup_id(rid, event.version), event.version)
        plan.rerouted.append(f)
        routed[rid] = Routed(rid, rkey, f.kind, event.version, f.ticket_id, event.score)
    return plan


# --- the ticket lifecycle ---


# Where a ticket may go from each status. Reopening (resolved or closed -> open) is allowed; a
# closed ticket is otherwise final. Staying in the same status is not a transition.
TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    "open": frozenset({"in_progress", "contacted", "resolved"}),
    "in_progress": frozenset({"open", "contacted", "resolved"}),
    "contacted": frozenset({"in_progress", "resolved"}),
    "resolved": frozenset({"closed", "open"}),
    "closed": frozenset({"open"}),
}
ACTIVE: frozenset[TicketStatus] = frozenset({"open", "in_progress", "contacted"})


class IllegalTransition(Exception):
    def __init__(self, current: TicketStatus, wanted: TicketStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        super().__init__(f"a ticket cannot go from {current} to {wanted} (from {current}: {allowed})")
        self.current, self.wanted = current, wanted


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class TicketState:
    status: TicketStatus
    assignee: str | None
    resolution: str | None
    version: int
    first_contact_at: datetime | None
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class TicketChange:
    """What a PATCH asks for; None leaves a field as it is (an empty assignee unassigns)."""

    status: TicketStatus | None = None
    assignee: str | None = None
    note: str | None = None
    resolution: str | None = None


def change_ticket(state: TicketState, change: TicketChange, now: datetime) -> TicketState:
    """The ticket after `change`, one version later. Reaching `contacted` (or resolving without it)
    stamps the first contact once; resolving stamps `resolved_at`, reopening clears it and the
    resolution. Raises IllegalTransition."""
    status = state.status
    if change.status is not None and change.status != state.status:
        if change.status not in TRANSITIONS[state.status]:
            raise IllegalTransition(state.status, change.status)
        status = change.status
    reopened = status == "open" and state.status in ("resolved", "closed")
    first_contact = state.first_contact_at
    if first_contact is None and status in ("contacted", "resolved"):
        first_contact = now
    resolved_at = state.resolved_at
    if status == "resolved" and state.status != "resolved":
        resolved_at = now
    resolution = change.resolution if change.resolution is not None else state.resolution
    if reopened:
        resolved_at, resolution = None, change.resolution
    assignee = state.assignee if change.assignee is None else (change.assignee or None)
    return TicketState(status, assignee, resolution, state.version + 1, first_contact, resolved_at)
