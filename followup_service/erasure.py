"""What erasing a person does to follow-up's tables. Never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.experiments.repository import forget_assignments
from followup_service.tables import SCHEMA
from followup_service.tickets.repository import ACTIVE_STATUSES, TICKET_COLUMNS
from shared import outbox
from shared.privacy import Erasures

ERASURES = Erasures(SCHEMA)  # followup.erasures: requests remembered for late events


_ERASED = f"""
    WITH e AS (SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[])) AS e(k, at))
    SELECT f.response_id FROM {SCHEMA}.followups f JOIN e ON f.respondent_key = e.k AND f.submitted_at <= e.at
"""


# The tickets of those responses (a ticket can hold several responses of its person).
_ERASED_TICKETS = f"SELECT ticket_id FROM {SCHEMA}.followups WHERE ticket_id IS NOT NULL AND response_id IN ({_ERASED})"


@dataclass(frozen=True, slots=True)
class Forgotten:
    followups: int  # follow-ups newly cleared
    closed: list[Row[tuple[object, ...]]]  # active tickets closed (resolution `erased`), as they now are


async def forget(
    conn: AsyncConnection, requested: Mapping[str, datetime], respondent_ids: Sequence[str], now: datetime
) -> Forgotten:
    """Clear the personal data of every follow-up (and its ticket) submitted at or before its
    respondent's erasure request: the respondent id, the comment, support's notes; close the
    person's active tickets (resolution `erased`); drop unsent outbox rows about them (events keyed
    by their id or their tickets'). What was routed stays, so counts and ticket states survive."""
    if not requested:
        return Forgotten(0, [])
    keys = sorted(requested)
    params = {"keys": keys, "times": [requested[k] for k in keys]}
    tickets = [r[0] for r in await conn.execute(sa.text(_ERASED_TICKETS), params)]
    await outbox.drop_keys(conn, SCHEMA, [i.encode() for i in respondent_ids] + [t.encode() for t in tickets])
    await conn.execute(  # notes support wrote about the person go with them
        sa.text(
            f"UPDATE {SCHEMA}.ticket_history SET note = NULL "
            "WHERE note IS NOT NULL AND ticket_id = ANY(CAST(:tickets AS text[]))"
        ),
        {"tickets": tickets},
    )
    await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.tickets SET respondent_id = NULL, comment = NULL "
            "WHERE ticket_id = ANY(CAST(:tickets AS text[])) AND (respondent_id IS NOT NULL OR comment IS NOT NULL)"
        ),
        {"tickets": tickets},
    )
    closed = list(
        await conn.execute(
            sa.text(
                f"""UPDATE {SCHEMA}.tickets SET status = 'closed', resolution = 'erased', version = version + 1,
                        updated_at = :now, resolved_at = coalesce(resolved_at, :now)
                    WHERE ticket_id = ANY(CAST(:tickets AS text[])) AND status = ANY(CAST(:active AS text[]))
                    RETURNING {TICKET_COLUMNS}"""
            ),
            {"tickets": tickets, "active": ACTIVE_STATUSES, "now": now},
        )
    )
    await conn.execute(  # their answers leave the outcome counts, as they leave scoring's
        sa.text(
            f"""DELETE FROM {SCHEMA}.transitions t
                USING unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[])) AS e(k, at)
                WHERE t.respondent_key = e.k AND t.answered_at <= e.at"""
        ),
        params,
    )
    await forget_assignments(conn, params)
    cleared = await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.followups SET respondent_id = NULL "
            f"WHERE response_id IN ({_ERASED}) AND respondent_id IS NOT NULL"
        ),
        params,
    )
    return Forgotten(int(cleared.rowcount), closed)
