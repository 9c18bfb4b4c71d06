"""What scoring's routes depend on, as `Annotated` aliases: the settings, a read connection, and
every query parameter parsed and checked (422 naming the parameter otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request

from scoring_service.domain import parse_dimension, parse_segment
from scoring_service.settings import ScoringSettings
from shared.problems import ProblemError
from shared.service import ReadConnection
from shared.validation import FieldProblem
from shared.windows import MAX_WINDOW_DAYS, DayRange, Interval, buckets, default_start, parse_window

T = TypeVar("T")
MAX_POINTS = 1_000  # a series longer than this is a mistake, not a chart
# Dates before this are refused: with windows of up to 3,660 days, no arithmetic leaves the calendar.
EARLIEST = date(1970, 1, 1)

__all__ = ["AsOf", "Dimension", "ReadConnection", "Segment", "Settings", "Span", "WindowQ", "window_days"]

WindowQ = Annotated[str, Query(description="N days ending on as_of (UTC), e.g. 7d, 30d, 90d")]


def invalid_query(field: str, problem: str) -> ProblemError:
    return ProblemError(
        422, "invalid_query", f"invalid {field}: {problem}", [FieldProblem(field=field, problem=problem)]
    )


def parsed(field: str, parse: Callable[..., T], *args: Any) -> T:
    """A domain parser's answer, or its ValueError as a 422 naming the parameter."""
    try:
        return parse(*args)
    except ValueError as exc:
        raise invalid_query(field, str(exc)) from exc


async def settings(request: Request) -> ScoringSettings:
    configured: ScoringSettings = request.app.state.settings
    return configured


Settings = Annotated[ScoringSettings, Depends(settings)]


def window_days(text: str, field: str = "window") -> int:
    """A window parameter's length in days (routes keep the text: answers echo it)."""
    return parsed(field, parse_window, text)


def today_of(request: Request) -> date:
    """Today (UTC) by the app's clock: `create_app(now=...)` pins it in tests, the real one otherwise."""
    clock: Callable[[], datetime] = request.app.state.clock
    return clock().astimezone(UTC).date()


def day_of(as_of: date | None, field: str, today: date) -> date:
    if as_of is None:
        return today
    if as_of > today:
        raise invalid_query(field, f"{as_of} is in the future (today is {today}, UTC)")
    if as_of < EARLIEST:
        raise invalid_query(field, f"{as_of} is before {EARLIEST}: no NPS survey is that old")
    return as_of


async def segment(
    config: Settings,
    segment: Annotated[
        str, Query(description="'all', dimension:value (channel:email), or a configured combination (a:1,b:2)")
    ] = "all",
) -> str:
    return parsed("segment", parse_segment, segment, config.segment_dimensions)


async def dimension(
    config: Settings,
    dimension: Annotated[str, Query(description="a dimension (product), or a combination (product,region)")],
) -> str:
    return parsed("dimension", parse_dimension, dimension, config.segment_dimensions)


async def as_of(
    request: Request,
    as_of: Annotated[
        date | None, Query(description="YYYY-MM-DD: answer as the windows stood on that day (default: today, UTC)")
    ] = None,
) -> date:
    return day_of(as_of, "as_of", today_of(request))


@dataclass(frozen=True, slots=True)
class SeriesSpan:
    days: DayRange
    interval: Interval


async def span(
    request: Request,
    interval: Annotated[Interval, Query(description="bucket size; weeks start on Monday")] = "week",
    start: Annotated[date | None, Query(alias="from", description="first day (default: 12 intervals back)")] = None,
    end: Annotated[date | None, Query(alias="to", description="last day (default: today, UTC)")] = None,
) -> SeriesSpan:
    today = today_of(request)
    last = day_of(end, "to", today)
    first = day_of(start, "from", today) if start else default_start(last, interval)
    if first > last:
        raise invalid_query("from", f"from ({first}) is after to ({last})")
    if (last - first).days >= MAX_WINDOW_DAYS:
        raise invalid_query("from", f"a series spans at most {MAX_WINDOW_DAYS} days")
    points = len(buckets(DayRange(first, last), interval))
    if points > MAX_POINTS:
        raise invalid_query("interval", f"{points} points; at most {MAX_POINTS}: use a longer interval")
    return SeriesSpan(DayRange(first, last), interval)


Segment = Annotated[str, Depends(segment)]
Dimension = Annotated[str, Depends(dimension)]
AsOf = Annotated[date, Depends(as_of)]
Span = Annotated[SeriesSpan, Depends(span)]
