"""Drop detection. Pure: plain values in, a decision out (`evaluate`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from shared.events import ScoreChanged
from shared.nps import Counts

_NAMESPACE = uuid.UUID("0b7f3c2e-8d51-4a7e-9f0a-6c1d2e3f4a5b")


@dataclass(frozen=True, slots=True)
class DropRule:
    drop_points: float
    min_responses: int

    def dropped(self, current: Counts, baseline: Counts) -> bool | None:
        """True: a drop. False: no drop. None: too few responses to say either way."""
        if current.n < self.min_responses or baseline.n < self.min_responses:
            return None
        assert current.nps is not None and baseline.nps is not None
        return baseline.nps - current.nps >= self.drop_points


class Transition(StrEnum):
    FIRE = "fire"
    RESOLVE = "resolve"
    NONE = "none"


def transition(firing: bool, dropped: bool | None) -> Transition:
    """Alerts change state only on evidence: too little data leaves the state as it is."""
    if dropped is None:
        return Transition.NONE
    if dropped and not firing:
        return Transition.FIRE
    if not dropped and firing:
        return Transition.RESOLVE
    return Transition.NONE


def alert_id(segment: str, fired_by: datetime) -> str:
    return f"al_{uuid.uuid5(_NAMESPACE, f'{segment}@{fired_by.isoformat()}').hex}"


@dataclass(frozen=True, slots=True)
class SegmentState:
    """What alerts remembers per segment: is its alert firing, and the newest score it judged."""

    segment: str
    firing: bool
    alert_id: str | None
    last_computed_at: datetime


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    segment: str
    as_of: date
    current_nps: float
    baseline_nps: float
    current_n: int
    baseline_n: int
    fired_at: datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    alert_id: str
    segment: str
    as_of: date
    current_nps: float | None
    baseline_nps: float | None
    resolved_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """What one ScoreChanged does to its segment. `state` is None for a stale event (a redelivery,
    or one overtaken by a newer score): nothing changes. Otherwise `state` is the new state, and
    a FIRE carries the alert it opens, a RESOLVE the alert it closes."""

    state: SegmentState | None
    transition: Transition = Transition.NONE
    fired: Alert | None = None
    resolved: Resolution | None = None


def evaluate(state: SegmentState | None, event: ScoreChanged, rule: DropRule) -> Decision:
    """Judge one segment's newest score against its state; the event's own time is the clock, so a
    redelivered event decides the same (and opens an alert with the same id)."""
    if state is not None and state.last_computed_at >= event.computed_at:
        return Decision(None)
    current, baseline = event.current.counts, event.baseline.counts
    firing = state is not None and state.firing
    open_alert = state.alert_id if state is not None else None
    step = transition(firing, rule.dropped(current, baseline))
    if step is Transition.FIRE:
        assert current.nps is not None and baseline.nps is not None
        alert = Alert(
            alert_id=alert_id(event.segment, event.computed_at),
            segment=event.segment,
            as_of=event.as_of,
            current_nps=current.nps,
            baseline_nps=baseline.nps,
            current_n=current.n,
            baseline_n=baseline.n,
            fired_at=event.computed_at,
        )
        return Decision(SegmentState(event.segment, True, alert.alert_id, event.computed_at), step, fired=alert)
    if step is Transition.RESOLVE and open_alert is not None:
        resolution = Resolution(
            open_alert, event.segment, event.as_of, current.nps, baseline.nps, resolved_at=event.computed_at
        )
        return Decision(SegmentState(event.segment, False, None, event.computed_at), step, resolved=resolution)
    return Decision(SegmentState(event.segment, firing, open_alert, event.computed_at))
