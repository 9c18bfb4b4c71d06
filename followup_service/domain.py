"""Routing rules. Pure: which follow-up a response gets, and its stable ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from shared.events import FollowUpKind, ResponseSubmitted
from shared.nps import Category, classify

# Ids derive from the response_id, so a redelivered response maps to the same follow-up and
# ticket, and a consumer seeing a ticket event twice can tell it is the same ticket.
_NAMESPACE = uuid.UUID("6f1c1f8e-5b1a-4c53-9d3e-2b8f0c4a7e11")

ROUTES: dict[Category, FollowUpKind] = {
    Category.PROMOTER: "referral",
    Category.PASSIVE: "education",
    Category.DETRACTOR: "ticket",
}


def route(score: int) -> FollowUpKind:
    return ROUTES[classify(score)]


def followup_id(response_id: str) -> str:
    return f"fu_{uuid.uuid5(_NAMESPACE, 'followup:' + response_id).hex}"


def ticket_id(response_id: str) -> str:
    return f"tk_{uuid.uuid5(_NAMESPACE, 'ticket:' + response_id).hex}"


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What one response is routed to; everything else about it is the response itself."""

    followup_id: str
    kind: FollowUpKind
    response: ResponseSubmitted
    created_at: datetime

    @property
    def ticket_id(self) -> str | None:
        return ticket_id(self.response.response_id) if self.kind == "ticket" else None


def plan(response: ResponseSubmitted, now: datetime, erased_at: datetime | None = None) -> FollowUp | None:
    """The follow-up of a response, or None when its respondent asked to be erased at or after it
    was submitted (`erased_at`): an erased person is never contacted, however late or often their
    response arrives. Ingest's clock stamps both times, so the comparison is on one clock."""
    if erased_at is not None and erased_at >= response.submitted_at:
        return None
    return FollowUp(followup_id(response.response_id), route(response.score), response, now)


# --- the ticket lifecycle ---

TicketStatus = Literal["open", "in_progress", "contacted", "resolved", "closed"]
TICKET_STATUSES: tuple[TicketStatus, ...] = get_args(TicketStatus)
Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)

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


@dataclass(frozen=True, slots=True)
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
