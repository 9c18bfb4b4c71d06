"""Tickets' API: list, read and change tickets, for support tools."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from followup_service.tickets import handlers, repository
from followup_service.tickets.domain import IllegalTransition, Priority, TicketChange, TicketStatus
from shared.auth import KEY_PROBLEMS, requires
from shared.problems import Problem, ProblemError, decode_cursor, encode_cursor
from shared.problems import invalid_field as _invalid
from shared.service import ReadConnection
from shared.validation import PLAIN

TicketId = Annotated[str, Path(pattern=r"^tk_[0-9a-f]{32}$", description="a ticket's id, `tk_` and 32 hex digits")]


class HistoryEntry(BaseModel):
    version: int
    at: datetime
    actor: str = Field(description="the name of the API key that made the change")
    status_from: str | None
    status_to: str | None
    assignee: str | None
    resolution: str | None
    note: str | None = Field(description="null once the respondent was erased")


class Ticket(BaseModel):
    ticket_id: str
    version: int = Field(description="send it back in `If-Match` to change the ticket")
    response_id: str
    respondent_id: str | None = Field(description="null once the respondent was erased")
    score: int
    comment: str | None
    status: TicketStatus
    priority: Priority
    assignee: str | None
    resolution: str | None
    channel: str | None
    survey_id: str | None
    created_at: datetime
    updated_at: datetime
    first_contact_at: datetime | None
    resolved_at: datetime | None
    first_contact_sla_s: float | None = Field(
        default=None,
        description="the time to first contact set by the ticket's policy rule, in seconds; null: "
        "its priority's (NPS_FOLLOWUP_SLA)",
    )
    resolution_sla_s: float | None = Field(default=None, description="the same for the time to resolution")


class TicketWithHistory(Ticket):
    history: list[HistoryEntry]


class TicketPage(BaseModel):
    tickets: list[Ticket]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class TicketPatch(BaseModel):
    """What to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    status: TicketStatus | None = None
    assignee: str | None = Field(default=None, max_length=128, description="an empty string unassigns")
    note: str | None = Field(default=None, min_length=1, max_length=5000)
    resolution: str | None = Field(default=None, min_length=1, max_length=200)


router = APIRouter(tags=["tickets"], responses=KEY_PROBLEMS)


_AGE = re.compile(r"^(\d{1,5})([mhd])$")


# RFC 9110 section 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc any visible character but
# DQUOTE (and obs-text); If-Match = "*" / a comma-separated list of them.
_ENTITY_TAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*(,|$)')


def parse_if_match(value: str | None) -> frozenset[int] | None:
    """The versions `If-Match` accepts, by RFC 9110's strong comparison: `*` is any (None); a list
    of entity tags accepts the versions of its strong tags that are a ticket's ETag (`"3"`): a weak
    tag (`W/"3"`) or another tag (`"abc"`) is well formed and matches nothing (412). Missing: 428;
    not a list of entity tags (`3`, `"3`): 422."""
    if value is None:
        raise ProblemError(
            428,
            "if_match_required",
            'send If-Match with the ticket\'s version (its ETag, e.g. "3"), or * to change it whatever it is',
        )
    if value.strip() == "*":
        return None
    versions, at = set(), 0
    while at < len(value) or at == 0:  # a tag may hold a comma: read tag by tag, not split
        match = _ENTITY_TAG.match(value, at)
        if match is None:
            raise _invalid("If-Match", 'expected the ticket\'s ETag, e.g. "3" (quotes included), a list of them, or *')
        weak, opaque, _ = match.groups()
        if not weak and re.fullmatch(r"[1-9][0-9]{0,8}", opaque):
            versions.add(int(opaque))
        at = match.end()
    return frozenset(versions)


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@router.get("/v1/tickets", response_model=TicketPage, dependencies=[requires("followups:read")])
async def list_tickets(
    conn: ReadConnection,
    status: TicketStatus | None = None,
    priority: Priority | None = None,
    channel: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PLAIN)] = None,
    survey_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=PLAIN)] = None,
    older_than: Annotated[
        str | None,
        Query(pattern=r"^\d{1,5}[mhd]$", description="only tickets created at least this long ago: 30m, 4h, 7d"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TicketPage:
    """Tickets, newest first, `limit` at a time."""
    before = None
    if older_than is not None:
        match = _AGE.match(older_than)
        assert match is not None  # the pattern above
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        before = datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    where = repository.TicketFilter(
        status=status,
        priority=priority,
        channel=channel,
        survey_id=survey_id,
        created_before=before,
        after=decode_cursor(cursor) if cursor else None,
    )
    rows = await repository.list_tickets(conn, where, limit + 1)
    page = [Ticket.model_validate(r._mapping) for r in rows[:limit]]
    more = len(rows) > limit
    return TicketPage(
        tickets=page, next_cursor=encode_cursor(page[-1].created_at, page[-1].ticket_id) if more else None
    )


@router.get(
    "/v1/tickets/{ticket_id}",
    response_model=TicketWithHistory,
    dependencies=[requires("followups:read")],
    responses={404: {"model": Problem, "description": "no such ticket"}},
)
async def get_ticket(conn: ReadConnection, ticket_id: TicketId, response: Response) -> TicketWithHistory:
    """A ticket with every change made to it; its `ETag` is its version."""
    row = await repository.get_ticket(conn, ticket_id)
    if row is None:
        raise ProblemError(404, "not_found", "no such ticket")
    history = [HistoryEntry.model_validate(h._mapping) for h in await repository.ticket_history(conn, ticket_id)]
    response.headers.update(etag(row.version))
    return TicketWithHistory.model_validate({**row._mapping, "history": history})


@router.patch(
    "/v1/tickets/{ticket_id}",
    response_model=Ticket,
    responses={
        404: {"model": Problem, "description": "no such ticket"},
        409: {"model": Problem, "description": "`illegal_transition`: the status cannot go there from where it is"},
        412: {"model": Problem, "description": "`version_mismatch`: the ticket changed since that version"},
        428: {"model": Problem, "description": "`if_match_required`: send If-Match"},
    },
)
async def patch_ticket(
    request: Request,
    ticket_id: TicketId,
    body: TicketPatch,
    response: Response,
    actor: Annotated[str, requires("tickets:write")],
    if_match: Annotated[str | None, Header(description='the version you read, as its ETag ("3"), or *')] = None,
) -> Any:
    """Change a ticket's status (open → in_progress → contacted → resolved → closed; reopen from
    resolved or closed), assignee, note or resolution. Publishes `TicketUpdated`."""
    expected = parse_if_match(if_match)
    if body.model_fields_set == set():
        raise _invalid("body", "nothing to change: send status, assignee, note or resolution")
    change = TicketChange(status=body.status, assignee=body.assignee, note=body.note, resolution=body.resolution)
    try:
        async with request.app.state.engine.begin() as conn:
            ticket = await handlers.update_ticket(
                conn, request.app.state.settings.topics, ticket_id, change, expected, actor, datetime.now(UTC)
            )
    except handlers.TicketNotFound:
        raise ProblemError(404, "not_found", "no such ticket") from None
    except handlers.StaleVersion as exc:
        raise ProblemError(
            412,
            "version_mismatch",
            f"If-Match names no current version: the ticket is at version {exc.current} (ETag "
            f'"{exc.current}", strong); read it again',
            headers=etag(exc.current),
        ) from None
    except IllegalTransition as exc:
        raise ProblemError(409, "illegal_transition", str(exc)) from None
    response.headers.update(etag(ticket.version))
    return Ticket.model_validate(ticket, from_attributes=True)
