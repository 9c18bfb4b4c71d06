"""Window arithmetic over UTC days. Pure: `today` is always passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

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


def preceding(current: DayRange, days: int) -> DayRange:
    """The `days`-long range that ends the day before `current` starts (the baseline)."""
    last = current.first - timedelta(days=1)
    return DayRange(first=last - timedelta(days=days - 1), last=last)
