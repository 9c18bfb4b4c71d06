"""What alerts publishes, as outbox rows (sent after the transaction commits)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alerts_service.domain import RuleState
from shared.events import AlertAcknowledged, AlertExplanation, AlertFired, AlertResolved
from shared.outbox import Outgoing


def fired(topic: str, state: RuleState, at: datetime, explanation: AlertExplanation) -> Outgoing:
    assert state.alert_id is not None
    event = AlertFired(
        alert_id=state.alert_id,
        rule=state.rule,
        segment=state.segment,
        fired_at=at,
        explanation=explanation,
    )
    return Outgoing.event(topic, state.segment, event)


def resolved(topic: str, state: RuleState, fired_at: datetime, at: datetime, explanation: AlertExplanation) -> Outgoing:
    assert state.alert_id is not None
    event = AlertResolved(
        alert_id=state.alert_id,
        rule=state.rule,
        segment=state.segment,
        fired_at=fired_at,
        resolved_at=at,
        explanation=explanation,
    )
    return Outgoing.event(topic, state.segment, event)


def acknowledged(topic: str, alert: Any, by: str, note: str | None, at: datetime) -> Outgoing:
    event = AlertAcknowledged(
        alert_id=alert.alert_id,
        rule=alert.rule,
        segment=alert.segment,
        acknowledged_by=by,
        note=note,
        acknowledged_at=at,
    )
    return Outgoing.event(topic, alert.segment, event)
