"""All of follow-up's SQL. Never commits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.domain import FollowUp, TicketState
from shared.privacy import Erasures

SCHEMA = "followup"

_INSERT_FOLLOWUPS = sa.text(
    f"""
    INSERT INTO {SCHEMA}.followups
        (followup_id, response_id, respondent_id, respondent_key, submitted_at, kind, score, channel, survey_id,
         created_at)
    SELECT * FROM unnest(
        CAST(:followup_ids AS text[]), CAST(:response_ids AS text[]), CAST(:respondent_ids AS text[]),
        CAST(:respondent_keys AS text[]), CAST(:submitted_ats AS timestamptz[]),
        CAST(:kinds AS text[]), CAST(:scores AS smallint[]), CAST(:channels AS text[]),
        CAST(:survey_ids AS text[]), CAST(:created_ats AS timestamptz[]))
    ON CONFLICT (response_id) DO NOTHING
    RETURNING response_id
    """
)

_INSERT_TICKETS = sa.text(
    f"""
    INSERT INTO {SCHEMA}.tickets
        (ticket_id, response_id, respondent_id, score, comment, channel, survey_id, status, created_at, updated_at)
    SELECT t.*, 'open', c, c FROM unnest(
        CAST(:ticket_ids AS text[]), CAST(:response_ids AS text[]), CAST(:respondent_ids AS text[]),
        CAST(:scores AS smallint[]), CAST(:comments AS text[]), CAST(:channels AS text[]),
        CAST(:surveys AS text[])) AS t, CAST(:created_at AS timestamptz) AS c
    ON CONFLICT (response_id) DO NOTHING
    """
)


async def insert_new(
    conn: AsyncConnection, followups: Sequence[FollowUp], respondent_key: Callable[[str], str]
) -> set[str]:
    """Store follow-ups for responses that have none yet; returns those response_ids."""
    if not followups:
        return set()
    result = await conn.execute(
        _INSERT_FOLLOWUPS,
        {
            "followup_ids": [f.followup_id for f in followups],
            "response_ids": [f.response.response_id for f in followups],
            "respondent_ids": [f.response.respondent_id for f in followups],
            "respondent_keys": [respondent_key(f.response.respondent_id) for f in followups],
            "submitted_ats": [f.response.submitted_at for f in followups],
            "kinds": [f.kind for f in followups],
            "scores": [f.response.score for f in followups],
            "channels": [f.response.channel for f in followups],
            "survey_ids": [f.response.survey_id for f in followups],
            "created_ats": [f.created_at for f in followups],
        },
    )
    return {row.response_id for row in result}


async def insert_tickets(conn: AsyncConnection, followups: Sequence[FollowUp]) -> None:
    tickets = [f for f in followups if f.ticket_id is not None]
    if not tickets:
        return
    await conn.execute(
        _INSERT_TICKETS,
        {
            "ticket_ids": [f.ticket_id for f in tickets],
            "response_ids": [f.response.response_id for f in tickets],
            "respondent_ids": [f.response.respondent_id for f in tickets],
            "scores": [f.response.score for f in tickets],
            "comments": [f.response.comment for f in tickets],
            "channels": [f.response.channel for f in tickets],
            "surveys": [f.response.survey_id for f in tickets],
            "created_at": tickets[0].created_at,
        },
    )


async def get_by_response(conn: AsyncConnection, response_id: str) -> Row[tuple[object, ...]] | None:
    result = await conn.execute(
        sa.text(
            f"""SELECT f.followup_id, f.kind, f.response_id, f.respondent_id, f.score, f.created_at,
                       t.ticket_id, t.status AS ticket_status
                FROM {SCHEMA}.followups f LEFT JOIN {SCHEMA}.tickets t USING (response_id)
                WHERE f.response_id = :rid"""
        ),
        {"rid": response_id},
    )
    return result.first()


# --- erasure ---


ERASURES = Erasures(SCHEMA)  # followup.erasures: requests remembered for late events


_ERASED = f"""
    WITH e AS (SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[])) AS e(k, at))
    SELECT f.response_id FROM {SCHEMA}.followups f JOIN e ON f.respondent_key = e.k AND f.submitted_at <= e.at
"""


async def forget(conn: AsyncConnection, requested: Mapping[str, datetime]) -> int:
    """Clear the personal data of every follow-up (and its ticket) submitted at or before its
    respondent's erasure request: the respondent id and the comment. What was routed stays, so the
    loop's counts and a ticket's status survive. Returns the follow-ups newly cleared."""
    if not requested:
        return 0
    keys = sorted(requested)
    params = {"keys": keys, "times": [requested[k] for k in keys]}
    await conn.execute(  # notes support wrote about the person go with them
        sa.text(
            f"UPDATE {SCHEMA}.ticket_history SET note = NULL WHERE note IS NOT NULL AND ticket_id IN "
            f"(SELECT ticket_id FROM {SCHEMA}.tickets WHERE response_id IN ({_ERASED}))"
        ),
        params,
    )
    await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.tickets SET respondent_id = NULL, comment = NULL "
            f"WHERE response_id IN ({_ERASED}) AND (respondent_id IS NOT NULL OR comment IS NOT NULL)"
        ),
        params,
    )
    cleared = await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.followups SET respondent_id = NULL "
            f"WHERE response_id IN ({_ERASED}) AND respondent_id IS NOT NULL"
        ),
        params,
    )
    return int(cleared.rowcount)


# --- tickets: the lifecycle API ---

TICKET_COLUMNS = (
    "ticket_id, version, response_id, respondent_id, score, comment, status, priority, assignee, resolution, "
    "channel, survey_id, created_at, updated_at, first_contact_at, resolved_at"
)


async def get_ticket(conn: AsyncConnection, ticket_id: str, *, lock: bool = False) -> Row[tuple[object, ...]] | None:
    lock_clause = " FOR UPDATE" if lock else ""
    result = await conn.execute(
        sa.text(f"SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets WHERE ticket_id = :id{lock_clause}"), {"id": ticket_id}
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


async def save_ticket(conn: AsyncConnection, ticket_id: str, state: TicketState, now: datetime) -> None:
    await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.tickets SET status = :status, assignee = :assignee, resolution = :resolution,
                    version = :version, first_contact_at = :first_contact, resolved_at = :resolved, updated_at = :now
                WHERE ticket_id = :id"""
        ),
        {
            "id": ticket_id,
            "status": state.status,
            "assignee": state.assignee,
            "resolution": state.resolution,
            "version": state.version,
            "first_contact": state.first_contact_at,
            "resolved": state.resolved_at,
            "now": now,
        },
    )


async def add_history(
    conn: AsyncConnection, ticket_id: str, before: str, after: TicketState, actor: str, note: str | None, now: datetime
) -> None:
    await conn.execute(
        sa.text(
            f"""INSERT INTO {SCHEMA}.ticket_history
                    (ticket_id, version, at, actor, status_from, status_to, assignee, resolution, note)
                VALUES (:id, :version, :at, :actor, :before, :after, :assignee, :resolution, :note)"""
        ),
        {
            "id": ticket_id,
            "version": after.version,
            "at": now,
            "actor": actor,
            "before": before,
            "after": after.status,
            "assignee": after.assignee,
            "resolution": after.resolution,
            "note": note,
        },
    )


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
