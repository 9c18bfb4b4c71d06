"""Routing rules. Pure: which follow-up a response gets, and its stable ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

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
