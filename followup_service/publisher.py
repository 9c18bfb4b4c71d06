"""What follow-up publishes, as outbox rows (sent after the batch's transaction commits)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic_core

from followup_service.routing.domain import FollowUp
from shared.events import TicketSlaBreached
from shared.outbox import Outgoing
from shared.settings import Topics

# The events below are written as dict literals in the models' field order, straight to JSON, as
# ingest writes ResponseSubmitted: the models stay the contract (tests/unit/test_publisher.py decodes
# every one with its model and re-encodes it to the same bytes), the hot path skips building one
# per event (~4 us each; a batch of 10,000 responses publishes ~15,000).


def outgoing(topics: Topics, followup: FollowUp, opens_ticket: bool) -> list[Outgoing]:
    """FollowUpCreated, and TicketOpened when the follow-up opened its ticket (one that joined the
    person's active ticket publishes TicketUpdated instead); FollowUpHeldOut for an experiment's
    held-out arm."""
    if followup.status == "held_out":
        return [held_out(topics, followup)]
    if followup.status != "created":  # failed or suppressed: recorded; nothing for anyone to send
        return []
    message = followup.message
    response = followup.response
    key = response.respondent_id.encode()
    created = {
        **_about(followup, "FollowUpCreated"),
        "template": message.template if message else None,
        "locale": message.locale if message else None,
        "subject": message.subject if message else None,
        "body_text": message.body_text if message else None,
        "body_html": message.body_html if message else None,
        "referral_code": followup.referral_code,
        "experiment_id": followup.experiment_id,
        "arm": followup.arm,
    }
    events = [Outgoing(topics.followups, key, pydantic_core.to_json(created))]
    if followup.ticket_id is not None and opens_ticket:
        opened = {
            "schema_version": 1,
            "type": "TicketOpened",
            "ticket_id": followup.ticket_id,
            "response_id": response.response_id,
            "respondent_id": response.respondent_id,
            "score": response.score,
            "comment": response.comment,
            "survey_id": response.survey_id,
            "channel": response.channel,
            "answered_at": response.answered_at,
            "created_at": followup.created_at,
        }
        # Keyed by its ticket, like the ticket's updates: one partition, so every consumer (delivery's
        # webhooks too) reads a ticket's events in the order they happened.
        events.append(Outgoing(topics.tickets, followup.ticket_id.encode(), pydantic_core.to_json(opened)))
    return events


def _about(followup: FollowUp, event_type: str) -> dict[str, Any]:
    """The fields FollowUpCreated and FollowUpHeldOut start with (shared.events.AboutAFollowUp), in
    their models' order."""
    response = followup.response
    return {
        "schema_version": 1,
        "type": event_type,
        "followup_id": followup.followup_id,
        "kind": followup.kind,
        "response_id": response.response_id,
        "respondent_id": response.respondent_id,
        "score": response.score,
        "channel": response.channel,
        "survey_id": response.survey_id,
        "created_at": followup.created_at,
        "rule": followup.rule,
        "policy_version": followup.policy_version,
    }


def held_out(topics: Topics, followup: FollowUp) -> Outgoing:
    event = {**_about(followup, "FollowUpHeldOut"), "experiment_id": followup.experiment_id, "arm": followup.arm}
    return Outgoing(topics.followups, followup.response.respondent_id.encode(), pydantic_core.to_json(event))


def ticket_updated(topics: Topics, ticket: Any, change: dict[str, str | None], actor: str) -> Outgoing:
    """A ticket's full state after a change, keyed by its id (its versions order its updates)."""
    event = {
        "schema_version": 1,
        "type": "TicketUpdated",
        "ticket_id": ticket.ticket_id,
        "version": ticket.version,
        "response_id": ticket.response_id,
        "respondent_id": ticket.respondent_id,
        "score": ticket.score,
        "comment": ticket.comment,
        "status": ticket.status,
        "priority": ticket.priority,
        "assignee": ticket.assignee,
        "resolution": ticket.resolution,
        "survey_id": ticket.survey_id,
        "channel": ticket.channel,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "first_contact_at": ticket.first_contact_at,
        "resolved_at": ticket.resolved_at,
        "change": change,
        "actor": actor,
    }
    return Outgoing(topics.tickets, ticket.ticket_id.encode(), pydantic_core.to_json(event))


def sla_breached(topics: Topics, ticket: Any, deadline: str, now: datetime) -> Outgoing:
    event = TicketSlaBreached(
        ticket_id=ticket.ticket_id,
        deadline=deadline,
        priority=ticket.priority,
        status=ticket.status,
        assignee=ticket.assignee,
        created_at=ticket.created_at,
        due_at=ticket.due_at,
        detected_at=now,
    )
    return Outgoing.event(topics.tickets, ticket.ticket_id, event)
