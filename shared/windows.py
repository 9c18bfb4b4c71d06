"""Window arithmetic over UTC days. Pure: `today` is always passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from shared.nps import Counts

MAX_WINDOW_DAYS = 3660  # ten years: longer windows are a typo, not a question
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})d$")


@dataclass(frozen=True, slots=True)
class DayRange:
    """Inclusive range of UTC days."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.first <= day <= self.last


def parse_window(text: str) -> int:
    """'30d' -> 30. Raises ValueError with a message fit for an API client."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"window must look like '7d', '30d' or '90d', got {text!r}")
    days = int(match.group(1))
    if days > MAX_WINDOW_DAYS:
        raise ValueError(f"window may be at most {MAX_WINDOW_DAYS}d, got {text!r}")
    return days


def utc_day(moment: datetime) -> date:
    """The UTC calendar day a moment falls on; a response counts in the day it was answered."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return moment.astimezone(UTC).date()


def window(today: date, days: int) -> DayRange:
    """A window of N days is `today` and the N-1 days before it."""
    if days < 1:
        raise ValueError("a window has at least one day")
    return DayRange(first=today - timedelta(days=days - 1), last=today)


def retention_cutoff(today: date, keep_days: int) -> date | None:
    """The first day a retention of `keep_days` keeps (today and the days before it), or None when
    0 keeps everything."""
    return window(today, keep_days).first if keep_days else None


def preceding(current: DayRange, days: int) -> DayRange:
    """The `days`-long range that ends the day before `current` starts (the baseline)."""
    last = current.first - timedelta(days=1)
    return DayRange(first=last - timedelta(days=days - 1), last=last)


# --- calendar series: days, ISO weeks (Monday first), months ---

Interval = Literal["day", "week", "month"]
# A series without a start shows twelve intervals: 12 days, 12 weeks or about 12 months.
_DEFAULT_SPAN = {"day": 11, "week": 77, "month": 335}


def bucket_start(day: date, interval: Interval) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if interval == "month":
        return day.replace(day=1)
    return day


def default_start(last: date, interval: Interval) -> date:
    """Where a series ending on `last` starts when the client names no start: 12 intervals back."""
    return bucket_start(last - timedelta(days=_DEFAULT_SPAN[interval]), interval)


def buckets(days: DayRange, interval: Interval) -> list[DayRange]:
    """Calendar buckets covering `days`, the first and last clipped to it."""
    out = []
    start = days.first
    while start <= days.last:
        if interval == "day":
            end = start
        elif interval == "week":
            end = bucket_start(start, "week") + timedelta(days=6)
        else:
            following = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
            end = following - timedelta(days=1)
        end = min(end, days.last)
        out.append(DayRange(start, end))
        start = end + timedelta(days=1)
    return out


def series(per_day: dict[date, Counts], days: DayRange, interval: Interval) -> list[tuple[DayRange, Counts]]:
    """Sum daily counts into the calendar buckets of `days` (every bucket, empty ones too)."""
    ranges = buckets(days, interval)
    totals = {bucket.first: Counts() for bucket in ranges}
    for day, counts in per_day.items():
        if day in days:
            start = max(bucket_start(day, interval), days.first)
            totals[start] = totals[start] + counts
    return [(bucket, totals[bucket.first]) for bucket in ranges]
