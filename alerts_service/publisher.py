"""What alerts publishes, as outbox rows (sent after the batch's transaction commits)."""

from __future__ import annotations

from datetime import date, datetime

from alerts_service.repository import AlertRow
from shared.events import ScoreDropDetected, ScoreDropResolved
from shared.outbox import Outgoing


def fired(topic: str, alert: AlertRow) -> Outgoing:
    return Outgoing.event(
        topic,
        alert.segment,
        ScoreDropDetected(
            alert_id=alert.alert_id,
            segment=alert.segment,
            as_of=alert.as_of,
            current_nps=alert.current_nps,
            baseline_nps=alert.baseline_nps,
            drop_points=alert.baseline_nps - alert.current_nps,
            current_n=alert.current_n,
            baseline_n=alert.baseline_n,
            detected_at=alert.fired_at,
        ),
    )


def resolved(
    topic: str,
    alert_id: str,
    segment: str,
    as_of: date,
    current_nps: float | None,
    baseline_nps: float | None,
    at: datetime,
) -> Outgoing:
    return Outgoing.event(
        topic,
        segment,
        ScoreDropResolved(
            alert_id=alert_id,
            segment=segment,
            as_of=as_of,
            current_nps=current_nps,
            baseline_nps=baseline_nps,
            resolved_at=at,
        ),
    )
