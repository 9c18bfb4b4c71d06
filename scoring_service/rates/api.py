"""Response rates' query API: of the people invited in a window, how many answered, with a Wilson
95% interval, per day, and how many were asked twice or more (survey fatigue)."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.deps import AsOf, ReadConnection, Segment, WindowQ, window_days
from scoring_service.rates import repository
from scoring_service.rates.domain import FATIGUE_DAYS, summed
from shared.auth import KEY_PROBLEMS, requires
from shared.nps import Rate, wilson95
from shared.windows import DayRange
from shared.windows import window as days_ending


class RateInterval(BaseModel):
    low: float
    high: float


class RateFigures(BaseModel):
    invited: int = Field(description="invitations sent in the window (each invitation_id once)")
    responded: int = Field(description="of them, those a response answered (whenever it came)")
    rate: float | None = Field(description="responded / invited; null when nobody was invited")
    ci95: RateInterval | None = Field(description="Wilson 95% interval of the rate; null when nobody was invited")


class RateDay(RateFigures):
    day: date


class Fatigue(BaseModel):
    days: int = Field(description=f"the {FATIGUE_DAYS} days ending on as_of")
    people: int = Field(description="people invited in those days, in this segment")
    asked_twice: int = Field(description="of them, those invited two or more times")
    share: float | None = Field(description="asked_twice / people; null when nobody was invited")


class RatesAnswer(RateFigures):
    segment: str
    window: str
    first_day: date
    last_day: date
    series: list[RateDay] = Field(description="every day of the window, oldest first (by the invitation's day)")
    fatigue: Fatigue


def rate_figures(rate: Rate) -> dict[str, object]:
    interval = wilson95(rate.responded, rate.invited)
    return {
        "invited": rate.invited,
        "responded": rate.responded,
        "rate": rate.rate,
        "ci95": RateInterval(low=interval.low, high=interval.high) if interval else None,
    }


async def rate_in(conn: AsyncConnection, segment: str, days: DayRange) -> Rate:
    return summed(await repository.days_of(conn, segment, days))


router = APIRouter(tags=["response rates"], dependencies=[requires("scores:read")], responses=KEY_PROBLEMS)


@router.get(
    "/v1/response-rates",
    response_model=RatesAnswer,
    summary="Of the people invited in a window, how many answered: rate, interval, daily series, fatigue",
)
async def get_response_rates(
    conn: ReadConnection, segment: Segment, as_of: AsOf, window: WindowQ = "30d"
) -> RatesAnswer:
    days = days_ending(as_of, window_days(window))
    per_day = await repository.days_of(conn, segment, days)
    series = [
        RateDay(day=day, **rate_figures(per_day.get(day, Rate(0, 0))))
        for day in (days.first + timedelta(days=i) for i in range(days.days))
    ]
    people, twice = await repository.asked_twice(conn, segment, days_ending(as_of, FATIGUE_DAYS))
    return RatesAnswer(
        segment=segment,
        window=window,
        first_day=days.first,
        last_day=days.last,
        series=series,
        fatigue=Fatigue(days=FATIGUE_DAYS, people=people, asked_twice=twice, share=twice / people if people else None),
        **rate_figures(summed(per_day)),
    )
