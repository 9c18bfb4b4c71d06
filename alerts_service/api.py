"""Alerts' API: what is firing, and the recent history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from alerts_service import repository
from shared.auth import KEY_PROBLEMS, requires
from shared.service import ReadConnection


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


router = APIRouter(tags=["alerts"], dependencies=[requires("alerts:read")], responses=KEY_PROBLEMS)


@router.get("/v1/alerts", response_model=AlertList)
async def list_alerts(
    conn: ReadConnection,
    state: Annotated[Literal["firing", "all"], Query()] = "firing",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    rows = await repository.list_alerts(conn, firing_only=state == "firing", limit=limit)
    return AlertList(alerts=[AlertAnswer.model_validate(r._mapping) for r in rows])
