"""`format: slack`: an event as a Slack incoming-webhook message (`text` for notifications, `blocks`
for the channel), so a channel can subscribe with no code in between. Slack's webhooks ignore
the Standard Webhooks headers, which are sent anyway."""

from __future__ import annotations

import json
from typing import Any

from delivery_service.domain import Outgoing
from shared.events import (
    FollowUpCreated,
    ScoreDropDetected,
    ScoreDropResolved,
    TicketOpened,
    TicketSlaBreached,
    TicketUpdated,
)


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def summary(event: Outgoing) -> tuple[str, list[tuple[str, str]], str | None]:
    """A headline, labelled fields and the API path that shows more."""
    if isinstance(event, ScoreDropDetected):
        return (
            f":small_red_triangle_down: NPS of {event.segment} dropped {event.drop_points:.1f} points",
            [
                ("Segment", event.segment),
                ("NPS now", f"{_points(event.current_nps)} (n={event.current_n})"),
                ("Baseline", f"{_points(event.baseline_nps)} (n={event.baseline_n})"),
                ("As of", event.as_of.isoformat()),
            ],
            "/v1/alerts",
        )
    if isinstance(event, ScoreDropResolved):
        return (
            f":white_check_mark: NPS of {event.segment} recovered",
            [("Segment", event.segment), ("NPS now", _points(event.current_nps)), ("As of", event.as_of.isoformat())],
            "/v1/alerts?state=all",
        )
    if isinstance(event, TicketOpened):
        fields = [("Score", str(event.score)), ("Channel", event.channel or "-"), ("Survey", event.survey_id or "-")]
        if event.comment:
            fields.append(("Comment", event.comment[:500]))
        return f":rotating_light: Detractor ticket {event.ticket_id} opened", fields, f"/v1/tickets/{event.ticket_id}"
    if isinstance(event, TicketUpdated):
        changed = ", ".join(f"{k}: {v}" for k, v in event.change.items()) or "updated"
        return (
            f":memo: Ticket {event.ticket_id} is {event.status.replace('_', ' ')}",
            [("Change", changed), ("Priority", event.priority), ("Assignee", event.assignee or "-"),
             ("Version", str(event.version))],
            f"/v1/tickets/{event.ticket_id}",
        )  # fmt: skip
    if isinstance(event, TicketSlaBreached):
        return (
            f":hourglass: Ticket {event.ticket_id} missed its {event.deadline.replace('_', ' ')} SLA",
            [("Priority", event.priority), ("Status", event.status), ("Due", event.due_at.isoformat())],
            f"/v1/tickets/{event.ticket_id}",
        )
    assert isinstance(event, FollowUpCreated)
    return (
        f":speech_balloon: {event.kind.replace('_', ' ').capitalize()} follow-up for a score of {event.score}",
        [("Rule", event.rule or "-"), ("Channel", event.channel or "-"), ("Survey", event.survey_id or "-")],
        f"/v1/followups/{event.response_id}",
    )


def slack_body(event: Outgoing, api_url: str | None) -> bytes:
    headline, fields, path = summary(event)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(headline)}*"}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)}"} for label, value in fields[:10]],
        },
    ]
    if api_url and path:
        link = api_url.rstrip("/") + path
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open in the NPS loop>"}]})
    return json.dumps({"text": headline, "blocks": blocks}, ensure_ascii=False).encode()


def slack_test_body() -> bytes:
    return json.dumps({"text": ":wave: Test message from the NPS loop: this channel's subscription works."}).encode()
