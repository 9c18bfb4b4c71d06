"""What alerts publishes, as outbox rows (sent after the batch's transaction commits)."""

from __future__ import annotations

from alerts_service.domain import Alert, Resolution
from shared.events import ScoreDropDetected, ScoreDropResolved
from shared.outbox import Outgoing


def fired(topic: str, alert: Alert) -> Outgoing:
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


def resolved(topic: str, resolution: Resolution) -> Outgoing:
    return Outgoing.event(
        topic,
        resolution.segment,
        ScoreDropResolved(
            alert_id=resolution.alert_id,
            segment=resolution.segment,
            as_of=resolution.as_of,
            current_nps=resolution.current_nps,
            baseline_nps=resolution.baseline_nps,
            resolved_at=resolution.resolved_at,
        ),
    )
