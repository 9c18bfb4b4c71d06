"""Alerts' API: alerts (filtered, paged, one with its explanation), acknowledgement, silences."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from alerts_service import handlers, repository
from shared import audit
from shared.auth import KEY_PROBLEMS, requires
from shared.events import AlertExplanation, AlertRule
from shared.problems import Problem, ProblemError, decode_cursor, encode_cursor, invalid_field
from shared.service import ReadConnection
from shared.validation import PLAIN

AlertId = Annotated[str, Path(pattern=r"^al_[0-9a-f]{32}$", description="an alert's id, `al_` and 32 hex digits")]
SilenceId = Annotated[str, Path(pattern=r"^si_[0-9a-f]{24}$", description="a silence's id, `si_` and 24 hex digits")]
MAX_SILENCE = timedelta(days=90)


class Alert(BaseModel):
    alert_id: str
    rule: AlertRule
    segment: str
    state: Literal["firing", "resolved"]
    fired_at: datetime
    resolved_at: datetime | None
    explanation: AlertExplanation | dict[str, Any] = Field(
        description="why it fired (alerts from before version 2 keep their original numbers)"
    )
    resolution: AlertExplanation | None = Field(description="the numbers when it resolved")
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_note: str | None
    silence_id: str | None = Field(description="the silence that kept it from being published, if one did")
    flaps: int = Field(description="times it came back while resolving (held firing, not paged again)")


class AlertPage(BaseModel):
    alerts: list[Alert]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last")


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=200, pattern=PLAIN, description="who took it")
    note: str | None = Field(default=None, max_length=2000)


class NewSilence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matcher: str = Field(
        min_length=1,
        max_length=500,
        pattern=PLAIN,
        description="a segment (`region:eu`) or a shell-style pattern (`region:*`, `*`) over segments",
    )
    rule: AlertRule | None = Field(default=None, description="only this rule's alerts; null: every rule")
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    ends_at: AwareDatetime
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _ordered(self) -> NewSilence:
        start = self.starts_at or datetime.now(UTC)
        if self.ends_at <= start:
            raise ValueError("ends_at must be after starts_at (and in the future)")
        if self.ends_at - start > MAX_SILENCE:
            raise ValueError(f"a silence lasts at most {MAX_SILENCE.days} days")
        return self


class SilenceAnswer(BaseModel):
    silence_id: str
    matcher: str
    rule: AlertRule | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str | None
    created_at: datetime


class SilenceList(BaseModel):
    silences: list[SilenceAnswer]


router = APIRouter(tags=["alerts"], responses=KEY_PROBLEMS)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such alert"}}


def _alert(row: Any) -> Alert:
    return Alert.model_validate({**row._mapping, "state": "firing" if row.resolved_at is None else "resolved"})


@router.get("/v1/alerts", response_model=AlertPage, dependencies=[requires("alerts:read")])
async def list_alerts(
    conn: ReadConnection,
    state: Annotated[Literal["firing", "resolved", "all"], Query()] = "firing",
    rule: Annotated[AlertRule | None, Query()] = None,
    segment: Annotated[str | None, Query(min_length=1, max_length=500, pattern=PLAIN)] = None,
    since: Annotated[AwareDatetime | None, Query(description="fired at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="fired before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AlertPage:
    """Newest first. `state=firing` (the default) includes alerts clearing but not yet resolved."""
    if since is not None and until is not None and until <= since:
        raise invalid_field("until", "must be after since")
    before = decode_cursor(cursor) if cursor is not None else None
    rows = await repository.list_alerts(conn, state, rule, segment, since, until, limit + 1, before)
    page = [_alert(r) for r in rows[:limit]]
    more = len(rows) > limit
    return AlertPage(alerts=page, next_cursor=encode_cursor(page[-1].fired_at, page[-1].alert_id) if more else None)


@router.get("/v1/alerts/{alert_id}", response_model=Alert, responses=NOT_FOUND, dependencies=[requires("alerts:read")])
async def get_alert(conn: ReadConnection, alert_id: AlertId) -> Alert:
    row = await repository.get_alert(conn, alert_id)
    if row is None:
        raise ProblemError(404, "not_found", "no such alert")
    return _alert(row)


@router.post("/v1/alerts/{alert_id}/ack", response_model=Alert, responses=NOT_FOUND)
async def acknowledge(
    request: Request, alert_id: AlertId, body: Ack, actor: Annotated[str, requires("alerts:write")]
) -> Alert:
    """Take an alert: who and a note, kept on the alert and published as `AlertAcknowledged`."""
    try:
        async with request.app.state.engine.begin() as conn:
            row = await handlers.acknowledge(
                conn,
                request.app.state.settings.topics.alerts,
                alert_id,
                body.by,
                body.note,
                actor,
                datetime.now(UTC),
            )
    except handlers.AlertNotFound:
        raise ProblemError(404, "not_found", "no such alert") from None
    return _alert(row)


@router.post("/v1/silences", status_code=201, response_model=SilenceAnswer)
async def create_silence(
    request: Request, body: NewSilence, actor: Annotated[str, requires("alerts:write")]
) -> SilenceAnswer:
    """Keep matching alerts from being published until `ends_at`. They are still evaluated and
    recorded (with the silence's id); an alert that fired silenced publishes nothing when it resolves."""
    now = datetime.now(UTC)
    silence = repository.Silence(
        silence_id=f"si_{secrets.token_hex(12)}",
        matcher=body.matcher,
        rule=body.rule,
        starts_at=body.starts_at or now,
        ends_at=body.ends_at,
        created_by=actor,
        comment=body.comment,
        created_at=now,
    )
    async with request.app.state.engine.begin() as conn:
        await repository.insert_silence(conn, silence)
        await audit.record(conn, actor, "silence.created", silence.silence_id, {"matcher": body.matcher})
    return SilenceAnswer.model_validate(silence, from_attributes=True)


@router.get("/v1/silences", response_model=SilenceList, dependencies=[requires("alerts:read")])
async def list_silences(
    conn: ReadConnection, include_expired: Annotated[bool, Query(description="also silences already over")] = False
) -> SilenceList:
    found = await repository.list_silences(conn, datetime.now(UTC), include_expired)
    return SilenceList(silences=[SilenceAnswer.model_validate(s, from_attributes=True) for s in found])


@router.delete(
    "/v1/silences/{silence_id}",
    status_code=204,
    responses={404: {"model": Problem, "description": "no such silence"}},
)
async def delete_silence(
    request: Request, silence_id: SilenceId, actor: Annotated[str, requires("alerts:write")]
) -> Response:
    async with request.app.state.engine.begin() as conn:
        if not await repository.delete_silence(conn, silence_id, datetime.now(UTC)):
            raise ProblemError(404, "not_found", "no such silence")
        await audit.record(conn, actor, "silence.deleted", silence_id, {})
    return Response(status_code=204)
