"""Scoring's query API: thin routes over the handlers. Every score comes with `n` and `ci95`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from scoring_service import handlers
from scoring_service.deps import AsOf, Dimension, ReadConnection, Segment, Settings, Span, WindowQ, window_days
from scoring_service.domain import BreakdownSort
from scoring_service.rates.api import RateFigures, rate_figures, rate_in
from shared.auth import KEY_PROBLEMS, requires
from shared.nps import Counts, ci95
from shared.windows import DayRange


class Interval(BaseModel):
    low: float
    high: float


class Figures(BaseModel):
    nps: float | None
    promoters: int
    passives: int
    detractors: int
    n: int
    ci95: Interval


class NpsAnswer(Figures):
    segment: str
    window: str
    first_day: date
    last_day: date
    response_rate: RateFigures | None = Field(
        default=None,
        description="of the people invited in the window, how many answered (GET /v1/response-rates); null when "
        "nobody was invited in it",
    )


class WindowsAnswer(BaseModel):
    segment: str
    as_of: date
    windows: list[NpsAnswer]


class BreakdownRow(Figures):
    value: str
    segment: str


class Breakdown(BaseModel):
    dimension: str
    window: str
    first_day: date
    last_day: date
    sort: str
    values: list[BreakdownRow]


class Point(Figures):
    first_day: date
    last_day: date


class Series(BaseModel):
    segment: str
    interval: str
    first_day: date
    last_day: date
    points: list[Point]


class Period(Figures):
    first_day: date
    last_day: date


class Comparison(BaseModel):
    segment: str
    window: str
    baseline_window: str
    current: Period
    baseline: Period
    difference: float  # adjusted NPS' points, current minus baseline
    z: float
    p_value: float  # one-sided, for a drop
    significance: float
    significant_drop: bool


def figures(counts: Counts) -> dict[str, Any]:
    """The fields every answer about some counts carries."""
    interval = ci95(counts)
    return {
        "nps": counts.nps,
        "promoters": counts.promoters,
        "passives": counts.passives,
        "detractors": counts.detractors,
        "n": counts.n,
        "ci95": Interval(low=interval.low, high=interval.high),
    }


def days_of(days: DayRange) -> dict[str, date]:
    return {"first_day": days.first, "last_day": days.last}


def nps_answer(window: str, result: handlers.Score) -> NpsAnswer:
    return NpsAnswer(segment=result.segment, window=window, **days_of(result.days), **figures(result.counts))


router = APIRouter(tags=["scores"], dependencies=[requires("scores:read")], responses=KEY_PROBLEMS)


@router.get("/v1/nps", response_model=NpsAnswer, summary="NPS of a segment over a rolling window")
async def get_nps(conn: ReadConnection, segment: Segment, as_of: AsOf, window: WindowQ = "30d") -> NpsAnswer:
    answer = nps_answer(window, await handlers.score(conn, segment, window_days(window), as_of))
    asked = await rate_in(conn, segment, DayRange(answer.first_day, answer.last_day))
    if asked.invited:
        answer.response_rate = RateFigures(**rate_figures(asked))
    return answer


@router.get(
    "/v1/nps/windows",
    response_model=WindowsAnswer,
    summary="NPS of a segment over every configured rolling window (NPS_SCORING_WINDOWS: 7d, 30d, 90d)",
)
async def get_windows(conn: ReadConnection, settings: Settings, segment: Segment, as_of: AsOf) -> WindowsAnswer:
    answers = [
        nps_answer(window, await handlers.score(conn, segment, window_days(window), as_of))
        for window in settings.rolling_windows
    ]
    return WindowsAnswer(segment=segment, as_of=as_of, windows=answers)


@router.get(
    "/v1/nps/breakdown", response_model=Breakdown, summary="Every value of a dimension with its NPS and interval"
)
async def get_breakdown(
    conn: ReadConnection,
    dimension: Dimension,
    as_of: AsOf,
    window: WindowQ = "30d",
    sort: Annotated[
        BreakdownSort,
        Query(description="nps: highest first; -nps: lowest first; n / -n: most / fewest responses; value"),
    ] = "nps",
) -> Breakdown:
    days, values = await handlers.breakdown(conn, dimension, window_days(window), as_of, sort)
    rows = [
        BreakdownRow(value=value, segment=value if "," in dimension else f"{dimension}:{value}", **figures(counts))
        for value, counts in values
    ]
    return Breakdown(dimension=dimension, window=window, sort=sort, values=rows, **days_of(days))


@router.get("/v1/nps/series", response_model=Series, summary="NPS per day, week or month")
async def get_series(conn: ReadConnection, span: Span, segment: Segment) -> Series:
    points = [
        Point(**days_of(bucket), **figures(counts))
        for bucket, counts in await handlers.series(conn, segment, span.days, span.interval)
    ]
    return Series(segment=segment, interval=span.interval, points=points, **days_of(span.days))


@router.get(
    "/v1/nps/compare",
    response_model=Comparison,
    summary="The current window against the baseline window right before it (adjusted-Wald z test)",
)
async def get_compare(
    conn: ReadConnection,
    settings: Settings,
    segment: Segment,
    as_of: AsOf,
    window: WindowQ = "7d",
    baseline: Annotated[str, Query(description="length of the baseline window that ends the day before")] = "28d",
) -> Comparison:
    days, base_days = window_days(window), window_days(baseline, "baseline")
    result = await handlers.compare_windows(conn, segment, days, base_days, as_of)
    return Comparison(
        segment=segment,
        window=window,
        baseline_window=baseline,
        current=Period(**days_of(result.current.days), **figures(result.current.counts)),
        baseline=Period(**days_of(result.baseline.days), **figures(result.baseline.counts)),
        difference=result.comparison.difference,
        z=result.comparison.z,
        p_value=result.comparison.p_value_drop,
        significance=settings.significance,
        significant_drop=result.comparison.significant_drop(settings.significance),
    )
