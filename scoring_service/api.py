"""Scoring's query API: thin routes over the handlers. Every score comes with `n` and `ci95`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from scoring_service import consumer, handlers
from scoring_service.domain import parse_dimension, parse_segment
from scoring_service.settings import ScoringSettings
from shared.http import FieldProblem, ProblemError, create_base_app, health_router
from shared.nps import Counts, ci95
from shared.service import Resources, consuming_lifespan, resources
from shared.windows import MAX_WINDOW_DAYS, DayRange, parse_window

MAX_POINTS = 1_000  # a series longer than this is a mistake, not a chart
# Dates before this are refused: with windows of up to 3,660 days, no arithmetic leaves the calendar.
EARLIEST = date(1970, 1, 1)


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


def figures(counts: Counts) -> Figures:
    interval = ci95(counts)
    return Figures(
        nps=counts.nps,
        promoters=counts.promoters,
        passives=counts.passives,
        detractors=counts.detractors,
        n=counts.n,
        ci95=Interval(low=interval.low, high=interval.high),
    )


class NpsAnswer(Figures):
    segment: str
    window: str
    first_day: date
    last_day: date


def nps_answer(window: str, result: handlers.Score) -> NpsAnswer:
    return NpsAnswer(
        segment=result.segment,
        window=window,
        first_day=result.days.first,
        last_day=result.days.last,
        **figures(result.counts).model_dump(),
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


# Module level, not inside create_app: with postponed annotations FastAPI resolves these names
# in the module's globals.
Res = Annotated[Resources, Depends(resources)]
WindowQ = Annotated[str, Query(description="N days ending on as_of (UTC), e.g. 7d, 30d, 90d")]
SegmentQ = Annotated[
    str, Query(description="'all', dimension:value (channel:email), or a configured combination (a:1,b:2)")
]
AsOfQ = Annotated[
    date | None, Query(description="YYYY-MM-DD: answer as the windows stood on that day (default: today, UTC)")
]


def invalid_query(field: str, problem: str) -> ProblemError:
    return ProblemError(
        422, "invalid_query", f"invalid {field}: {problem}", [FieldProblem(field=field, problem=problem)]
    )


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    settings = settings or ScoringSettings()
    dimensions = settings.segment_dimensions
    app = create_base_app("scoring", "NPS scoring", consuming_lifespan(settings, consumer.spec(settings)))
    app.include_router(health_router(lambda: app.state.resources.checks()))

    def window_days(text: str, field: str = "window") -> int:
        try:
            return parse_window(text)
        except ValueError as exc:
            raise invalid_query(field, str(exc)) from exc

    def segment_key(text: str) -> str:
        try:
            return parse_segment(text, dimensions)
        except ValueError as exc:
            raise invalid_query("segment", str(exc)) from exc

    def day_of(as_of: date | None, field: str = "as_of") -> date:
        today = datetime.now(UTC).date()
        if as_of is None:
            return today
        if as_of > today:
            raise invalid_query(field, f"{as_of} is in the future (today is {today}, UTC)")
        if as_of < EARLIEST:
            raise invalid_query(field, f"{as_of} is before {EARLIEST}: no NPS survey is that old")
        return as_of

    @app.get("/v1/nps", response_model=NpsAnswer, tags=["scores"], summary="NPS of a segment over a rolling window")
    async def get_nps(res: Res, window: WindowQ = "30d", segment: SegmentQ = "all", as_of: AsOfQ = None) -> NpsAnswer:
        days, key, day = window_days(window), segment_key(segment), day_of(as_of)
        async with res.engine.connect() as conn:
            return nps_answer(window, await handlers.score(conn, key, days, day))

    @app.get(
        "/v1/nps/windows",
        response_model=WindowsAnswer,
        tags=["scores"],
        summary="NPS of a segment over every configured rolling window (NPS_SCORING_WINDOWS: 7d, 30d, 90d)",
    )
    async def get_windows(res: Res, segment: SegmentQ = "all", as_of: AsOfQ = None) -> WindowsAnswer:
        key, day = segment_key(segment), day_of(as_of)
        answers = []
        async with res.engine.connect() as conn:
            for window in settings.rolling_windows:
                answers.append(nps_answer(window, await handlers.score(conn, key, parse_window(window), day)))
        return WindowsAnswer(segment=key, as_of=day, windows=answers)

    @app.get(
        "/v1/nps/breakdown",
        response_model=Breakdown,
        tags=["scores"],
        summary="Every value of a dimension with its NPS and interval",
    )
    async def get_breakdown(
        res: Res,
        dimension: Annotated[str, Query(description="a dimension (product), or a combination (product,region)")],
        window: WindowQ = "30d",
        as_of: AsOfQ = None,
        sort: Annotated[
            Literal["nps", "-nps", "n", "-n", "value"],
            Query(description="nps: highest first; -nps: lowest first; n / -n: most / fewest responses; value"),
        ] = "nps",
    ) -> Breakdown:
        days, day = window_days(window), day_of(as_of)
        try:
            name = parse_dimension(dimension, dimensions)
        except ValueError as exc:
            raise invalid_query("dimension", str(exc)) from exc
        async with res.engine.connect() as conn:
            span, values = await handlers.breakdown(conn, name, days, day)
        rows = [
            BreakdownRow(value=value, segment=value if "," in name else f"{name}:{value}", **figures(c).model_dump())
            for value, c in values.items()
        ]
        keys = {
            "nps": lambda r: (-(r.nps or 0.0), -r.n, r.value),
            "-nps": lambda r: (r.nps or 0.0, -r.n, r.value),
            "n": lambda r: (-r.n, r.value),
            "-n": lambda r: (r.n, r.value),
            "value": lambda r: (r.value,),
        }
        rows.sort(key=keys[sort])
        return Breakdown(
            dimension=name, window=window, first_day=span.first, last_day=span.last, sort=sort, values=rows
        )

    @app.get("/v1/nps/series", response_model=Series, tags=["scores"], summary="NPS per day, week or month")
    async def get_series(
        res: Res,
        interval: Annotated[
            Literal["day", "week", "month"], Query(description="bucket size; weeks start on Monday")
        ] = "week",
        start: Annotated[date | None, Query(alias="from", description="first day (default: 12 intervals back)")] = None,
        end: Annotated[date | None, Query(alias="to", description="last day (default: today, UTC)")] = None,
        segment: SegmentQ = "all",
    ) -> Series:
        key = segment_key(segment)
        last = day_of(end, "to")
        first = (
            day_of(start, "from")
            if start
            else handlers.bucket_start(last - timedelta(days={"day": 11, "week": 77, "month": 335}[interval]), interval)
        )
        if first > last:
            raise invalid_query("from", f"from ({first}) is after to ({last})")
        if (last - first).days >= MAX_WINDOW_DAYS:
            raise invalid_query("from", f"a series spans at most {MAX_WINDOW_DAYS} days")
        span = DayRange(first, last)
        ranges = handlers.buckets(span, interval)
        if len(ranges) > MAX_POINTS:
            raise invalid_query("interval", f"{len(ranges)} points; at most {MAX_POINTS}: use a longer interval")
        async with res.engine.connect() as conn:
            per_day = await handlers.daily(conn, key, span)
        points = [
            Point(first_day=bucket.first, last_day=bucket.last, **figures(c).model_dump())
            for bucket, c in handlers.series(per_day, span, interval)
        ]
        return Series(segment=key, interval=interval, first_day=first, last_day=last, points=points)

    @app.get(
        "/v1/nps/compare",
        response_model=Comparison,
        tags=["scores"],
        summary="The current window against the baseline window right before it (adjusted-Wald z test)",
    )
    async def get_compare(
        res: Res,
        window: WindowQ = "7d",
        baseline: Annotated[str, Query(description="length of the baseline window that ends the day before")] = "28d",
        segment: SegmentQ = "all",
        as_of: AsOfQ = None,
    ) -> Comparison:
        days, base_days, key, day = (
            window_days(window),
            window_days(baseline, "baseline"),
            segment_key(segment),
            day_of(as_of),
        )
        async with res.engine.connect() as conn:
            result = await handlers.compare_windows(conn, key, days, base_days, day)
        p_value = result.comparison.p_value_drop
        return Comparison(
            segment=key,
            window=window,
            baseline_window=baseline,
            current=Period(
                first_day=result.current.days.first,
                last_day=result.current.days.last,
                **figures(result.current.counts).model_dump(),
            ),
            baseline=Period(
                first_day=result.baseline.days.first,
                last_day=result.baseline.days.last,
                **figures(result.baseline.counts).model_dump(),
            ),
            difference=result.comparison.difference,
            z=result.comparison.z,
            p_value=p_value,
            significance=settings.significance,
            significant_drop=result.comparison.difference < 0 and p_value < settings.significance,
        )

    return app
