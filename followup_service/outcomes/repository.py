"""The outcomes' SQL: a person's moves between answers, and their counts. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.outcomes.domain import NOT_FOLLOWED_UP, Cell, Transition
from followup_service.tables import SCHEMA, copy_new


async def insert_transitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> None:
    if transitions:
        # Plain tuples: asyncpg encodes a tuple subclass's items through the generic path, ~2x slower.
        await copy_new(conn, "transitions", Transition._fields, [tuple(t) for t in transitions])


async def outcome_cells(
    conn: AsyncConnection, since: datetime, channel: str | None, survey_id: str | None
) -> list[Cell]:
    rows = await conn.execute(
        sa.text(
            f"""SELECT CASE WHEN followup_status = 'created' AND followup_kind <> 'none' THEN followup_kind
                            ELSE '{NOT_FOLLOWED_UP}' END AS grp,
                       previous_category, new_category, count(*) AS n
                FROM {SCHEMA}.transitions
                WHERE answered_at >= :since
                  AND (CAST(:channel AS text) IS NULL OR channel = :channel)
                  AND (CAST(:survey AS text) IS NULL OR survey_id = :survey)
                GROUP BY 1, 2, 3"""
        ),
        {"since": since, "channel": channel, "survey": survey_id},
    )
    return [Cell(r.grp, r.previous_category, r.new_category, int(r.n)) for r in rows]
