"""Alerts' API: what is firing, and the recent history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from alerts_service import consumer, repository
from alerts_service.settings import AlertSettings
from shared.http import create_base_app, health_router
from shared.service import Resources, consuming_lifespan, resources


class AlertAnswer(BaseModel):
    alert_id: str
    segment: str
    as_of: date
    current_nps: float
    baseline_nps: float
    current_n: int
    baseline_n: int
    fired_at: datetime
    resolved_at: datetime | None


class AlertList(BaseModel):
    alerts: list[AlertAnswer]


def create_app(settings: AlertSettings | None = None) -> FastAPI:
    settings = settings or AlertSettings()
    app = create_base_app("alerts", "NPS alerts", consuming_lifespan(settings, consumer.spec(settings)))
    app.include_router(health_router(lambda: app.state.resources.checks()))

    @app.get("/v1/alerts", response_model=AlertList, tags=["alerts"])
    async def list_alerts(
        res: Annotated[Resources, Depends(resources)],
        state: Annotated[Literal["firing", "all"], Query()] = "firing",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AlertList:
        async with res.engine.connect() as conn:
            rows = await repository.list_alerts(conn, firing_only=state == "firing", limit=limit)
        return AlertList(alerts=[AlertAnswer.model_validate(r._mapping) for r in rows])

    return app
