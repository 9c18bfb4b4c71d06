"""The ticket lifecycle. Pure: a ticket's ids, statuses and priorities, where a status may go, and
what a change does to a ticket."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from followup_service.ids import stable_hex
from shared.wire import Response, Revised

TicketStatus = Literal["open", "in_progress", "contacted", "resolved", "closed"]


TICKET_STATUSES: tuple[TicketStatus, ...] = get_args(TicketStatus)


Priority = Literal["low", "normal", "high", "urgent"]


PRIORITIES: tuple[Priority, ...] = get_args(Priority)


def ticket_id(response_id: str) -> str:
    return f"tk_{stable_hex('ticket:' + response_id)}"


def revision_ticket_id(event: Revised) -> str:
    """The ticket a revision into detractor opens: stable per response and version."""
    return f"tk_{stable_hex(f'ticket:{event.response_id}:v{event.version}')}"


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
