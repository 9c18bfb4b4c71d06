"""What scoring publishes, as outbox rows (sent after the batch's transaction commits)."""

from __future__ import annotations

from datetime import date, datetime

from shared.events import ScoreChanged, WindowCounts
from shared.nps import Counts
from shared.outbox import Outgoing
from shared.windows import DayRange


def window_counts(days: DayRange, counts: Counts) -> WindowCounts:
    return WindowCounts(
        first_day=days.first,
        last_day=days.last,
        promoters=counts.promoters,
        passives=counts.passives,
        detractors=counts.detractors,
    )


def score_changed(
    topic: str,
    segment: str,
    as_of: date,
    current: tuple[DayRange, Counts],
    baseline: tuple[DayRange, Counts],
    now: datetime,
) -> Outgoing:
    event = ScoreChanged(
        segment=segment,
        as_of=as_of,
        current=window_counts(*current),
        baseline=window_counts(*baseline),
        computed_at=now,
    )
    return Outgoing.event(topic, segment, event)
