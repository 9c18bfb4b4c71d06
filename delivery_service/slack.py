"""`format: slack`: an event as a Slack incoming-webhook message (`text` for notifications, `blocks`
for the channel), so a channel can subscribe with no code in between. Slack's webhooks ignore
the Standard Webhooks headers, which are sent anyway."""

from __future__ import annotations

import json
from typing import Any

from delivery_service.domain import Outgoing
from shared.events import (
    AlertAcknowledged,
    AlertFired,
    AlertResolved,
    AlertWindowCounts,
    FollowUpCreated,
    FollowUpHeldOut,
    TicketOpened,
    TicketSlaBreached,
    TicketUpdated,
)


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def _n(window: AlertWindowCounts) -> int:
    return window.promoters + window.passives + window.detractors


def summary(event: Outgoing) -> tuple[str, list[tuple[str, str]], str | None]:
    """A headline, labelled fields and the API path that shows more."""
    if isinstance(event, AlertFired):
        x = event.explanation
        fields = [
            ("Segment", event.segment),
            ("Rule", event.rule),
            ("NPS now", f"{_points(x.current.nps)} (n={_n(x.current)})"),
            ("Baseline", f"{_points(x.baseline.nps)} (n={_n(x.baseline)})"),
        ]
        if x.p_value is not None:
            fields.append(("p / q", f"{x.p_value:.2g} / {'-' if x.q_value is None else f'{x.q_value:.2g}'}"))
        if x.contributors:
            fields.append(("Most of it", ", ".join(f"{c.segment} ({c.points:+.1f})" for c in x.contributors)))
        return f":small_red_triangle_down: {_escape(x.summary)}", fields, f"/v1/alerts/{event.alert_id}"
    if isinstance(event, AlertResolved):
        return (
            f":white_check_mark: {event.rule} alert on {event.segment} resolved",
            [
                ("Segment", event.segment),
                ("NPS now", _points(event.explanation.current.nps)),
                ("Fired", event.fired_at.isoformat()),
            ],
            f"/v1/alerts/{event.alert_id}",
        )
    if isinstance(event, AlertAcknowledged):
        fields = [("Segment", event.segment), ("By", event.acknowledged_by)]
        if event.note:
            fields.append(("Note", event.note[:500]))
        return f":eyes: {event.rule} alert on {event.segment} acknowledged", fields, f"/v1/alerts/{event.alert_id}"
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
    if isinstance(event, FollowUpHeldOut):
        return (
            f":test_tube: {event.kind.replace('_', ' ').capitalize()} follow-up held out (experiment "
            f"{event.experiment_id}, arm {event.arm})",
            [("Rule", event.rule or "-"), ("Score", str(event.score)), ("Survey", event.survey_id or "-")],
            f"/v1/experiments/{event.experiment_id}",
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
