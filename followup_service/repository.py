"""All of follow-up's SQL. Never commits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.domain import FollowUp
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
    INSERT INTO {SCHEMA}.tickets (ticket_id, response_id, respondent_id, score, comment, status, created_at)
    SELECT t.*, 'open', c FROM unnest(
        CAST(:ticket_ids AS text[]), CAST(:response_ids AS text[]), CAST(:respondent_ids AS text[]),
        CAST(:scores AS smallint[]), CAST(:comments AS text[])) AS t, CAST(:created_at AS timestamptz) AS c
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
