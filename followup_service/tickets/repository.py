"""The tickets' SQL: tickets and their history, read, locked and written; SLA deadlines; the
active tickets by age. Never commits."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.tables import SCHEMA, copy_new
from followup_service.tickets.domain import Priority
from shared.db import copy_rows, fetch, split_list

ACTIVE_STATUSES = ["open", "in_progress", "contacted"]


async def active_tickets(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, str]:
    """The active ticket of each of these respondent keys that has one, locked."""
    rows = await fetch(
        conn,
        f"SELECT respondent_key, ticket_id FROM {SCHEMA}.tickets WHERE respondent_key = ANY(string_to_array($1, $2)) "
        "AND status = ANY($3::text[]) ORDER BY ticket_id FOR UPDATE",
        *split_list(set(keys)),
        ACTIVE_STATUSES,
    )
    return dict(rows)


@dataclass
class TicketRow:
    """A ticket as the batch handler changes it in memory before writing it once."""

    ticket_id: str
    version: int
    response_id: str
    respondent_id: str | None
    respondent_key: str
    score: int
    comment: str | None
    status: str
    priority: str
    assignee: str | None
    resolution: str | None
    channel: str | None
    survey_id: str | None
    created_at: datetime
    updated_at: datetime
    first_contact_at: datetime | None
    resolved_at: datetime | None
    first_contact_sla_s: float | None = None  # its rule's own SLA (None: its priority's)
    resolution_sla_s: float | None = None


_TICKET_ROW = [f.name for f in fields(TicketRow)]


TICKET_COLUMNS = ", ".join(_TICKET_ROW)  # what every read of a ticket selects


_ticket_values = operator.attrgetter(*_TICKET_ROW)  # a ticket's values, as one tuple


_TICKET_TYPES = {
    "version": "integer",
    "score": "smallint",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "first_contact_at": "timestamptz",
    "resolved_at": "timestamptz",
    "first_contact_sla_s": "float8",
    "resolution_sla_s": "float8",
}


def _unnest(rows: Sequence[TicketRow]) -> tuple[str, dict[str, list[object]]]:
    casts = ", ".join(f"CAST(:{c} AS {_TICKET_TYPES.get(c, 'text')}[])" for c in _TICKET_ROW)
    return f"unnest({casts})", {c: [getattr(r, c) for r in rows] for c in _TICKET_ROW}


async def tickets_for_update(conn: AsyncConnection, ticket_ids: Iterable[str]) -> dict[str, TicketRow]:
    ids = sorted(set(ticket_ids))
    if not ids:
        return {}
    rows = await fetch(
        conn,
        f"SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets WHERE ticket_id = ANY($1::text[]) ORDER BY ticket_id FOR UPDATE",
        ids,
    )
    return {r[0]: TicketRow(*r) for r in rows}


async def write_tickets(conn: AsyncConnection, changed: Sequence[TicketRow], new: Sequence[TicketRow]) -> None:
    """The batch's tickets, as they end: changed ones first (a resolved ticket frees its person's
    slot), then the new ones, in one statement each."""
    if changed:
        source, params = _unnest(changed)
        columns = [c for c in _TICKET_ROW if c != "ticket_id"]
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.tickets t SET {', '.join(f'{c} = v.{c}' for c in columns)} "
                f"FROM {source} AS v({', '.join(_TICKET_ROW)}) WHERE t.ticket_id = v.ticket_id"
            ),
            params,
        )
    if new:
        await copy_new(conn, "tickets", _TICKET_ROW, [_ticket_values(r) for r in new])


_HISTORY_COLUMNS = ("ticket_id", "version", "at", "actor", "status_from", "status_to", "assignee", "resolution", "note")


_history_values = operator.itemgetter(*_HISTORY_COLUMNS)  # a row's values, as one tuple


async def insert_history(conn: AsyncConnection, entries: Sequence[Mapping[str, object]]) -> None:
    if entries:
        rows = [_history_values(e) for e in entries]
        await copy_rows(conn, f"{SCHEMA}.ticket_history", _HISTORY_COLUMNS, rows)


async def get_ticket(conn: AsyncConnection, ticket_id: str) -> Row[tuple[object, ...]] | None:
    result = await conn.execute(
        sa.text(f"SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets WHERE ticket_id = :id"), {"id": ticket_id}
    )
    return result.first()


async def ticket_history(conn: AsyncConnection, ticket_id: str) -> list[Row[tuple[object, ...]]]:
    result = await conn.execute(
        sa.text(
            f"SELECT version, at, actor, status_from, status_to, assignee, resolution, note "
            f"FROM {SCHEMA}.ticket_history WHERE ticket_id = :id ORDER BY version"
        ),
        {"id": ticket_id},
    )
    return list(result)


@dataclass(frozen=True, slots=True)
class TicketFilter:
    status: str | None = None
    priority: str | None = None
    channel: str | None = None
    survey_id: str | None = None
    created_before: datetime | None = None  # "older than"
    after: tuple[datetime, str] | None = None  # the cursor: the last (created_at, ticket_id) seen


async def list_tickets(conn: AsyncConnection, where: TicketFilter, limit: int) -> list[Row[tuple[object, ...]]]:
    """Newest first; `limit` of them after the cursor."""
    result = await conn.execute(
        sa.text(
            f"""SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets
                WHERE (CAST(:status AS text) IS NULL OR status = :status)
                  AND (CAST(:priority AS text) IS NULL OR priority = :priority)
                  AND (CAST(:channel AS text) IS NULL OR channel = :channel)
                  AND (CAST(:survey AS text) IS NULL OR survey_id = :survey)
                  AND (CAST(:before AS timestamptz) IS NULL OR created_at < :before)
                  AND (CAST(:after_at AS timestamptz) IS NULL OR (created_at, ticket_id) < (:after_at, :after_id))
                ORDER BY created_at DESC, ticket_id DESC
                LIMIT :limit"""
        ),
        {
            "status": where.status,
            "priority": where.priority,
            "channel": where.channel,
            "survey": where.survey_id,
            "before": where.created_before,
            "after_at": where.after[0] if where.after else None,
            "after_id": where.after[1] if where.after else None,
            "limit": limit,
        },
    )
    return list(result)


_SLA_DEADLINES = {
    # deadline: (the time that meets it, the mark that it was missed, the ticket's own SLA)
    "first_contact": ("first_contact_at", "first_contact_breached_at", "first_contact_sla_s"),
    "resolution": ("resolved_at", "resolution_breached_at", "resolution_sla_s"),
}


async def mark_breaches(
    conn: AsyncConnection, deadline: str, seconds: Mapping[Priority, float], now: datetime
) -> list[Row[tuple[object, ...]]]:
    """Active tickets past their `deadline` (their rule's own SLA, else their priority's in
    `seconds`; a priority not there has none) that had not met it, marked (once) and returned with
    their `due_at`."""
    met, missed, own = _SLA_DEADLINES[deadline]
    due = f"t.created_at + make_interval(secs => coalesce(t.{own}, CAST(CAST(:seconds AS jsonb) ->> t.priority AS float8)))"
    result = await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.tickets t SET {missed} = :now
                WHERE t.{met} IS NULL AND t.{missed} IS NULL AND t.status = ANY(CAST(:active AS text[]))
                  AND {due} < CAST(:now AS timestamptz)
                RETURNING t.ticket_id, t.priority, t.status, t.assignee, t.created_at, {due} AS due_at"""
        ),
        {"seconds": json.dumps(dict(seconds)), "active": ACTIVE_STATUSES, "now": now},
    )
    return list(result)


AGE_BUCKETS = (("1h", 3_600), ("4h", 4 * 3_600), ("1d", 86_400), ("3d", 3 * 86_400), ("older", None))


async def active_by_age(conn: AsyncConnection, now: datetime) -> dict[tuple[str, str], int]:
    """Active tickets by (priority, age bucket): `1h` for under an hour old, ..., `older` past 3 days."""
    cases = " ".join(
        f"WHEN created_at > CAST(:now AS timestamptz) - make_interval(secs => {secs}) THEN '{name}'"
        for name, secs in AGE_BUCKETS
        if secs
    )
    rows = await conn.execute(
        sa.text(
            f"""SELECT priority, CASE {cases} ELSE 'older' END AS bucket, count(*) AS n
                FROM {SCHEMA}.tickets WHERE status = ANY(CAST(:active AS text[])) GROUP BY 1, 2"""
        ),
        {"active": ACTIVE_STATUSES, "now": now},
    )
    return {(r.priority, r.bucket): int(r.n) for r in rows}
