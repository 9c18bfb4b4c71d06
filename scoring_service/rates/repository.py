"""Response rates' SQL: invitations and answers stored, each changed person's invitations matched
again (domain.answered's rule, in one statement), and the daily counts they sum to. Set-based, one
statement per step of a batch; never commits (the consumer loop owns the transaction)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.rates.domain import Answer, Invited, Rate
from scoring_service.repository import SCHEMA, joined, split, split_in_sql
from shared.db import copy_rows, fetch, split_list
from shared.windows import DayRange

# pg_advisory_xact_lock(RATES_LOCK, hashtext(person)): two consumers of one partition during a
# rebalance take turns per person (a person's matching reads their rows, then changes them).
RATES_LOCK = 0x52415445  # "RATE"

Deltas = dict[tuple[str, date], list[int]]  # (segment, day) -> [invited, responded]


async def lock_people(conn: AsyncConnection, keys: Iterable[str]) -> None:
    await fetch(
        conn,
        f"SELECT count(pg_advisory_xact_lock({RATES_LOCK}, hashtext(k))) "
        "FROM (SELECT k FROM unnest(string_to_array($1, $2)) AS k ORDER BY k) o",
        *split_list(set(keys)),
    )


def _add(deltas: Deltas, segments: str, day: date, invited: int, responded: int) -> None:
    for segment in split(segments):
        pair = deltas[(segment, day)]
        pair[0] += invited
        pair[1] += responded


async def forget(conn: AsyncConnection, requested: Mapping[str, datetime], deltas: Deltas) -> None:
    """Erasure: what ingest took of these people before their request leaves, and its counts with
    it (what it took after is theirs anew). Their remaining rows are matched again by the caller."""
    if not requested:
        return
    keys = sorted(requested)
    params = {"keys": keys, "ats": [requested[k] for k in keys]}
    gone = await conn.execute(
        sa.text(
            f"DELETE FROM {SCHEMA}.rate_invitations USING unnest(CAST(:keys AS text[]), CAST(:ats AS timestamptz[])) "
            "AS e(k, at) WHERE respondent_key = e.k AND accepted_at <= e.at RETURNING segments, day, answered"
        ),
        params,
    )
    for row in gone:
        _add(deltas, row.segments, row.day, -1, -int(row.answered))
    await conn.execute(
        sa.text(
            f"DELETE FROM {SCHEMA}.rate_answers USING unnest(CAST(:keys AS text[]), CAST(:ats AS timestamptz[])) "
            "AS e(k, at) WHERE respondent_key = e.k AND accepted_at <= e.at"
        ),
        params,
    )


async def store_answers(conn: AsyncConnection, answers: Sequence[Answer]) -> set[str]:
    """The answers new to us (a redelivered one is there already); returns their people's keys."""
    if not answers:
        return set()
    rows = await copy_rows(
        conn,
        f"{SCHEMA}.rate_answers",
        ("response_id", "respondent_key", "survey_id", "answered_at", "invitation_id", "accepted_at"),
        [
            (a.response_id, a.respondent_key, a.survey_id, a.answered_at, a.invitation_id, a.accepted_at)
            for a in answers
        ],
        then="ON CONFLICT (response_id) DO NOTHING RETURNING respondent_key",
    )
    return {r[0] for r in rows}


async def store_invitations(conn: AsyncConnection, invitations: Sequence[Invited], deltas: Deltas) -> set[str]:
    """The invitations new to us, counted as invited; returns their people's keys."""
    if not invitations:
        return set()
    rows = await copy_rows(
        conn,
        f"{SCHEMA}.rate_invitations",
        ("invitation_id", "respondent_key", "survey_id", "invited_at", "day", "segments", "accepted_at"),
        [
            (i.invitation_id, i.respondent_key, i.survey_id, i.invited_at, i.day, joined(i.segments), i.accepted_at)
            for i in invitations
        ],
        # A copy taken later than the one stored keeps the invitation past an erasure between them.
        then="ON CONFLICT (invitation_id) DO UPDATE SET accepted_at = EXCLUDED.accepted_at "
        "WHERE rate_invitations.accepted_at < EXCLUDED.accepted_at "
        "RETURNING respondent_key, segments, day, xmax = 0 AS inserted",
    )
    for _, segments, day, inserted in rows:
        if inserted:
            _add(deltas, segments, day, 1, 0)
    return {r[0] for r in rows if r[3]}


# domain.answered, for the given people, against everything stored of them; each invitation whose
# `answered` differs from the rule's is flipped and handed back with its new value.
_REMATCH = f"""
    WITH people AS (SELECT unnest(CAST(:keys AS text[])) AS k),
    inv AS (
        SELECT invitation_id, respondent_key, survey_id, invited_at, answered
        FROM {SCHEMA}.rate_invitations WHERE respondent_key IN (SELECT k FROM people)
    ), hit AS (
        SELECT DISTINCT coalesce(
            (SELECT n.invitation_id FROM inv n
              WHERE n.invitation_id = a.invitation_id AND n.respondent_key = a.respondent_key),
            (SELECT n.invitation_id FROM inv n
              WHERE n.respondent_key = a.respondent_key AND n.survey_id = a.survey_id
                AND n.invited_at <= a.answered_at AND n.invited_at >= a.answered_at - CAST(:window AS interval)
              ORDER BY n.invited_at DESC, n.invitation_id DESC LIMIT 1)
        ) AS invitation_id
        FROM {SCHEMA}.rate_answers a WHERE a.respondent_key IN (SELECT k FROM people)
    )
    UPDATE {SCHEMA}.rate_invitations r SET answered = NOT r.answered
    FROM inv
    WHERE r.invitation_id = inv.invitation_id
      AND inv.answered <> EXISTS (SELECT 1 FROM hit WHERE hit.invitation_id = inv.invitation_id)
    RETURNING r.segments, r.day, r.answered
"""


async def rematch(conn: AsyncConnection, keys: Iterable[str], window: timedelta, deltas: Deltas) -> None:
    people = sorted(set(keys))
    if not people:
        return
    flipped = await conn.execute(sa.text(_REMATCH), {"keys": people, "window": window})
    for row in flipped:
        _add(deltas, row.segments, row.day, 0, 1 if row.answered else -1)


async def add_daily(conn: AsyncConnection, deltas: Deltas) -> None:
    changed = sorted(k for k, v in deltas.items() if v != [0, 0])  # one lock order for every writer
    if not changed:
        return
    await conn.execute(
        sa.text(
            f"""INSERT INTO {SCHEMA}.rate_daily AS d (segment, day, invited, responded)
                SELECT * FROM unnest(CAST(:segments AS text[]), CAST(:days AS date[]),
                                     CAST(:invited AS integer[]), CAST(:responded AS integer[]))
                ON CONFLICT (segment, day) DO UPDATE SET
                    invited = d.invited + EXCLUDED.invited, responded = d.responded + EXCLUDED.responded"""
        ),
        {
            "segments": [s for s, _ in changed],
            "days": [d for _, d in changed],
            "invited": [deltas[k][0] for k in changed],
            "responded": [deltas[k][1] for k in changed],
        },
    )


def new_deltas() -> Deltas:
    return defaultdict(lambda: [0, 0])


# --- reads ---


async def days_of(conn: AsyncConnection, segment: str, days: DayRange) -> dict[date, Rate]:
    rows = await conn.execute(
        sa.text(
            f"SELECT day, invited, responded FROM {SCHEMA}.rate_daily "
            "WHERE segment = :s AND day BETWEEN :first AND :last AND invited > 0 ORDER BY day"
        ),
        {"s": segment, "first": days.first, "last": days.last},
    )
    return {r.day: Rate(r.invited, r.responded) for r in rows}


async def asked_twice(conn: AsyncConnection, segment: str, days: DayRange) -> tuple[int, int]:
    """(people invited in these days in this segment, of them those invited two or more times)."""
    row = (
        await conn.execute(
            sa.text(
                f"""SELECT count(*) AS people, count(*) FILTER (WHERE n >= 2) AS twice FROM (
                        SELECT respondent_key, count(*) AS n FROM {SCHEMA}.rate_invitations
                        WHERE day BETWEEN :first AND :last AND :s = ANY({split_in_sql("segments")})
                        GROUP BY respondent_key) per_person"""
            ),
            {"s": segment, "first": days.first, "last": days.last},
        )
    ).one()
    return int(row.people), int(row.twice)


async def all_daily(conn: AsyncConnection) -> dict[tuple[str, date], Rate]:
    rows = await conn.execute(
        sa.text(
            f"SELECT segment, day, invited, responded FROM {SCHEMA}.rate_daily WHERE invited <> 0 OR responded <> 0"
        )
    )
    return {(r.segment, r.day): Rate(r.invited, r.responded) for r in rows}


async def stored(conn: AsyncConnection) -> tuple[list[Invited], list[Answer]]:
    """Everything stored (tests and `--check`: the recompute's input)."""
    invitations = [
        Invited(r.invitation_id, r.respondent_key, r.survey_id, r.invited_at, r.day, split(r.segments), r.accepted_at)
        for r in await conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.rate_invitations"))
    ]
    answers = [
        Answer(r.response_id, r.respondent_key, r.survey_id, r.answered_at, r.invitation_id, r.accepted_at)
        for r in await conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.rate_answers"))
    ]
    return invitations, answers
