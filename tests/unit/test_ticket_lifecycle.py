"""The ticket state machine (followup_service/tickets/domain.py): the allowed transitions, and what each
change stamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.tickets.domain import (
    ACTIVE,
    TICKET_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    TicketChange,
    TicketState,
    change_ticket,
)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
NEW = TicketState("open", None, None, 1, None, None)


@pytest.mark.parametrize("current", TICKET_STATUSES)
@pytest.mark.parametrize("wanted", TICKET_STATUSES)
def test_only_the_table_s_transitions_are_allowed(current: str, wanted: str) -> None:
    state = TicketState(current, None, None, 4, None, None)  # type: ignore[arg-type]
    if wanted == current or wanted in TRANSITIONS[current]:  # type: ignore[index]
        assert change_ticket(state, TicketChange(status=wanted), T0).status == wanted  # type: ignore[arg-type]
    else:
        with pytest.raises(IllegalTransition, match=f"from {current} to {wanted}"):
            change_ticket(state, TicketChange(status=wanted), T0)  # type: ignore[arg-type]


def test_the_happy_path_stamps_first_contact_and_resolution_once() -> None:
    working = change_ticket(NEW, TicketChange(status="in_progress", assignee="ana"), T0)
    assert (working.status, working.assignee, working.version, working.first_contact_at) == (
        "in_progress",
        "ana",
        2,
        None,
    )
    contacted = change_ticket(working, TicketChange(status="contacted", note="called"), T0 + timedelta(hours=1))
    assert contacted.first_contact_at == T0 + timedelta(hours=1) and contacted.version == 3
    resolved = change_ticket(contacted, TicketChange(status="resolved", resolution="refund"), T0 + timedelta(hours=2))
    assert resolved.resolved_at == T0 + timedelta(hours=2) and resolved.resolution == "refund"
    assert resolved.first_contact_at == T0 + timedelta(hours=1)  # not moved
    closed = change_ticket(resolved, TicketChange(status="closed"), T0 + timedelta(hours=3))
    assert closed.resolved_at == resolved.resolved_at and closed.resolution == "refund"
    reopened = change_ticket(closed, TicketChange(status="open"), T0 + timedelta(hours=4))
    assert (reopened.status, reopened.resolved_at, reopened.resolution) == ("open", None, None)
    assert reopened.first_contact_at == T0 + timedelta(hours=1) and reopened.version == 6


def test_resolving_without_contact_counts_as_the_first_contact_and_an_empty_assignee_unassigns() -> None:
    resolved = change_ticket(NEW, TicketChange(status="resolved"), T0)
    assert resolved.first_contact_at == T0 == resolved.resolved_at
    assigned = change_ticket(NEW, TicketChange(assignee="ana"), T0)
    assert change_ticket(assigned, TicketChange(assignee=""), T0).assignee is None
    assert change_ticket(assigned, TicketChange(note="still waiting"), T0).assignee == "ana"


@given(st.lists(st.sampled_from(TICKET_STATUSES), max_size=30))
def test_any_walk_keeps_the_invariants(wanted: list[str]) -> None:
    state, now = NEW, T0
    for status in wanted:
        now += timedelta(minutes=5)
        try:
            after = change_ticket(state, TicketChange(status=status), now)  # type: ignore[arg-type]
        except IllegalTransition:
            assert status != state.status and status not in TRANSITIONS[state.status]
            continue
        assert after.version == state.version + 1
        assert (after.resolved_at is not None) == (after.status in ("resolved", "closed"))
        assert after.status in ACTIVE or after.first_contact_at is not None
        if after.status == "contacted":
            assert after.first_contact_at is not None
        if state.first_contact_at is not None:
            assert after.first_contact_at == state.first_contact_at
        state = after


def test_the_documented_transitions_are_the_ones_enforced() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "followup.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", doc, flags=re.M))
    documented = {k: frozenset(re.findall(r"`(\w+)`", v)) for k, v in table.items()}
    assert documented == TRANSITIONS
    diagram = re.findall(r"^    (\w+) --> (\w+)", doc, flags=re.M)
    assert {(a, b) for a, b in diagram} == {(a, b) for a, to in TRANSITIONS.items() for b in to}
