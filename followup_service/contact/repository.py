"""The contact rules' SQL: people's messages sent, opt-outs, last answers. Never commits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.contact.domain import ContactHistory
from followup_service.tables import SCHEMA
from shared.db import fetch, split_list


async def lock_people(conn: AsyncConnection, keys: Iterable[str]) -> None:
    """Serialise transactions about the same people (two consumers on one partition during a
    rebalance): the contact rules read a person's messages, then add to them."""
    await fetch(
        conn,
        "SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM (SELECT k FROM unnest(string_to_array($1, $2)) AS k ORDER BY k) o",
        *split_list(set(keys)),
    )


async def contact_histories(conn: AsyncConnection, keys: Iterable[str], since: datetime) -> dict[str, ContactHistory]:
    """Each person's opt-out and the messages sent to them since `since` (tickets are not messages)."""
    histories = {k: ContactHistory() for k in keys}
    wanted = split_list(histories)
    opted = await fetch(
        conn,
        f"SELECT respondent_key FROM {SCHEMA}.opt_outs WHERE respondent_key = ANY(string_to_array($1, $2))",
        *wanted,
    )
    for (key,) in opted:
        histories[key].opted_out = True
    # Each person's rows through the index on respondent_key, one lookup a person. Written as
    # `respondent_key = ANY(...)` the planner chose a scan of the whole table for a batch's ~800
    # people once it held ~40,000 follow-ups (79 ms at 37,000 rows, seen taking seconds of a loaded
    # loop's PostgreSQL); OFFSET 0 keeps the subquery from being flattened into such a join.
    sent = await fetch(
        conn,
        f"""SELECT k.key, f.kind, f.created_at FROM unnest(string_to_array($1, $2)) AS k(key)
            CROSS JOIN LATERAL (
                SELECT kind, created_at FROM {SCHEMA}.followups
                WHERE respondent_key = k.key AND status = 'created'
                  AND kind NOT IN ('ticket', 'none') AND created_at > $3
                OFFSET 0
            ) f
            ORDER BY f.created_at""",
        *wanted,
        since,
    )
    for key, kind, at in sent:
        histories[key].sent.append((kind, at))
    return histories


async def set_opt_out(conn: AsyncConnection, key: str, at: datetime | None) -> bool:
    """Opt a person out (`at`) or back in (None); True if that changed anything."""
    if at is None:
        result = await conn.execute(sa.text(f"DELETE FROM {SCHEMA}.opt_outs WHERE respondent_key = :k"), {"k": key})
    else:
        result = await conn.execute(
            sa.text(f"INSERT INTO {SCHEMA}.opt_outs VALUES (:k, :at) ON CONFLICT (respondent_key) DO NOTHING"),
            {"k": key, "at": at},
        )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class ContactState:
    opted_out_at: datetime | None
    last_answer_at: datetime | None
    erased_at: datetime | None


async def contact_state(conn: AsyncConnection, key: str) -> ContactState:
    row = (
        await conn.execute(
            sa.text(
                f"""SELECT (SELECT opted_out_at FROM {SCHEMA}.opt_outs WHERE respondent_key = :k) AS opted_out_at,
                           (SELECT max(submitted_at) FROM {SCHEMA}.followups WHERE respondent_key = :k) AS last_answer_at,
                           (SELECT requested_at FROM {SCHEMA}.erasures WHERE respondent_key = :k) AS erased_at"""
            ),
            {"k": key},
        )
    ).one()
    return ContactState(row.opted_out_at, row.last_answer_at, row.erased_at)
