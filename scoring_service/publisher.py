"""What scoring publishes, as outbox rows (sent after the batch's transaction commits)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from shared.events import DayCounts, DayRates, ScoreChanged, WindowCounts
from shared.nps import Counts, Rate
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
    current: DayRange,
    baseline: DayRange,
    span: DayRange,
    days: Mapping[date, Counts],
    now: datetime,
    rates: Mapping[date, Rate] | None = None,
) -> Outgoing:
    """`days`: the segment's non-zero days in `span` (both windows and more); the windows' sums are made
    from them. `rates`: its days with invitations in `span` (None: it has no response rates)."""
    event = ScoreChanged(
        segment=segment,
        as_of=as_of,
        current=window_counts(current, Counts.total(c for d, c in days.items() if d in current)),
        baseline=window_counts(baseline, Counts.total(c for d, c in days.items() if d in baseline)),
        computed_at=now,
        daily_first_day=span.first,
        daily=[
            DayCounts(day=d, promoters=c.promoters, passives=c.passives, detractors=c.detractors)
            for d, c in sorted(days.items())
        ],
        rates=None
        if rates is None
        else [DayRates(day=d, invited=r.invited, responded=r.responded) for d, r in sorted(rates.items())],
    )
    return Outgoing.event(topic, segment, event)
