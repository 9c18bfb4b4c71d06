"""Scoring's query API: thin routes over the handlers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from scoring_service import consumer, handlers
from scoring_service.domain import parse_segment
from scoring_service.settings import ScoringSettings
from shared.http import FieldProblem, ProblemError, create_base_app, health_router
from shared.nps import ci95
from shared.service import Resources, consuming_lifespan, resources
from shared.windows import parse_window


class Interval(BaseModel):
    low: float
    high: float


class NpsAnswer(BaseModel):
    segment: str
    window: str
    first_day: date
    last_day: date
    nps: float | None
    promoters: int
    passives: int
    detractors: int
    n: int
    ci95: Interval


def invalid_query(field: str, problem: str) -> ProblemError:
    return ProblemError(
        422, "invalid_query", f"invalid {field}: {problem}", [FieldProblem(field=field, problem=problem)]
    )


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    settings = settings or ScoringSettings()
    app = create_base_app("scoring", "NPS scoring", consuming_lifespan(settings, consumer.spec(settings)))
    app.include_router(health_router(lambda: app.state.resources.checks()))

    @app.get("/v1/nps", response_model=NpsAnswer, tags=["scores"])
    async def get_nps(
        res: Annotated[Resources, Depends(resources)],
        window: Annotated[str, Query(description="N days ending today (UTC), e.g. 7d, 30d, 90d")] = "30d",
        segment: Annotated[str, Query(description="'all', or dimension:value, e.g. channel:email")] = "all",
    ) -> NpsAnswer:
        try:
            days = parse_window(window)
        except ValueError as exc:
            raise invalid_query("window", str(exc)) from exc
        try:
            key = parse_segment(segment)
        except ValueError as exc:
            raise invalid_query("segment", str(exc)) from exc
        async with res.engine.connect() as conn:
            result = await handlers.score(conn, key, days, datetime.now(UTC).date())
        interval = ci95(result.counts)
        return NpsAnswer(
            segment=key,
            window=window,
            first_day=result.days.first,
            last_day=result.days.last,
            nps=result.counts.nps,
            promoters=result.counts.promoters,
            passives=result.counts.passives,
            detractors=result.counts.detractors,
            n=result.counts.n,
            ci95=Interval(low=interval.low, high=interval.high),
        )

    return app
