"""Response rates' SQL: invitations and answers stored, each changed person's invitations matched
again (domain.answered's rule, in one statement), and the daily counts they sum to. Set-based, one
statement per step of a batch; never commits (the consumer loop owns the transaction)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.rates.domain import Answer, Invited
from scoring_service.repository import SCHEMA, joined, split, split_in_sql
from shared.db import UNIQUE_VIOLATION, copy_rows, fetch, split_list, sqlstate_of
from shared.nps import Rate
from shared.windows import DayRange

# pg_advisory_xact_lock(RATES_LOCK, bucket of the person): two consumers of one partition during a
# rebalance take turns per person (a person's matching reads their rows, then changes them). By
# bucket (of 4,096), in order: a batch of 10,000 people takes ~2,900 locks, not 10,000.
RATES_LOCK = 0x52415445  # "RATE"
LOCK_BUCKETS = 4096

Deltas = dict[tuple[str, date], list[int]]  # (segment, day) -> [invited, responded]


async def lock_people(conn: AsyncConnection, keys: Iterable[str]) -> None:
    await fetch(
        conn,
        f"SELECT count(pg_advisory_xact_lock({RATES_LOCK}, b)) FROM (SELECT DISTINCT "
        f"(hashtext(k) & {LOCK_BUCKETS - 1}) AS b FROM unnest(string_to_array($1, $2)) AS k ORDER BY b) o",
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


async def _stored_ids(conn: AsyncConnection, table: str, column: str, ids: Sequence[str]) -> dict[str, datetime]:
    rows = await fetch(
        conn,
        f"SELECT {column}, accepted_at FROM {SCHEMA}.{table} WHERE {column} = ANY(string_to_array($1, $2))",
        *split_list(ids),
    )
    return {r[0]: r[1] for r in rows}


# The callers hold their people's locks (lock_people), and an id belongs to one person (ingest refuses
# another person under a used id). Most batches hold no id stored before, so their rows are first
# written by a plain COPY under a savepoint (no lookup, no staging table, no conflict handling: a third
# of the cost per row); only a batch whose COPY meets an id already stored (a redelivery) looks up
# which are new and writes those.
_ANSWER_COLUMNS = ("response_id", "respondent_key", "survey_id", "answered_at", "invitation_id", "accepted_at")
_INVITATION_COLUMNS = ("invitation_id", "respondent_key", "survey_id", "invited_at", "day", "segments", "accepted_at")


async def _copy_new(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> dict[str, datetime]:
    """COPY the rows whose id (the first column) is not stored yet; returns the stored ones' ids
    with their accepted_at (empty when every row was new)."""
    try:
        async with conn.begin_nested():
            await copy_rows(conn, f"{SCHEMA}.{table}", columns, rows)
        return {}
    except IntegrityError as exc:
        if sqlstate_of(exc) != UNIQUE_VIOLATION:
            raise
    known = await _stored_ids(conn, table, columns[0], [r[0] for r in rows])
    await copy_rows(conn, f"{SCHEMA}.{table}", columns, [r for r in rows if r[0] not in known])
    return known


async def store_answers(conn: AsyncConnection, answers: Sequence[Answer]) -> list[Answer]:
    """Stores the answers new to us (a redelivered one is there already) and returns them."""
    if not answers:
        return []
    rows = [
        (a.response_id, a.respondent_key, a.survey_id, a.answered_at, a.invitation_id, a.accepted_at) for a in answers
    ]
    known = await _copy_new(conn, "rate_answers", _ANSWER_COLUMNS, rows)
    return [a for a in answers if a.response_id not in known]


async def store_invitations(conn: AsyncConnection, invitations: Sequence[Invited], deltas: Deltas) -> list[Invited]:
    """Stores the invitations new to us, counted as invited, and returns them. One stored already
    takes a later copy's time (it then stays past an erasure between the two)."""
    if not invitations:
        return []
    rows = [
        (i.invitation_id, i.respondent_key, i.survey_id, i.invited_at, i.day, joined(i.segments), i.accepted_at)
        for i in invitations
    ]
    known = await _copy_new(conn, "rate_invitations", _INVITATION_COLUMNS, rows)
    later = [i for i in invitations if i.invitation_id in known and known[i.invitation_id] < i.accepted_at]
    if later:
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.rate_invitations r SET accepted_at = l.at "
                "FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS l(id, at) WHERE r.invitation_id = l.id"
            ),
            {"ids": [i.invitation_id for i in later], "ats": [i.accepted_at for i in later]},
        )
    new = [i for i in invitations if i.invitation_id not in known]
    for invitation in new:
        for segment in invitation.segments:
            deltas[(segment, invitation.day)][0] += 1
    return new


# The invitation answer `a` picks (domain.answered): the one it names if that is the person's, else
# the person's latest to the survey within the window (ties: the greatest id). Both lookups go through
# an index (the primary key; a person's invitations to a survey by time).
_PICK_OF = f"""coalesce(
    (SELECT n.invitation_id FROM {SCHEMA}.rate_invitations n
      WHERE n.invitation_id = a.invitation_id AND n.respondent_key = a.respondent_key),
    (SELECT n.invitation_id FROM {SCHEMA}.rate_invitations n
      WHERE n.respondent_key = a.respondent_key AND n.survey_id = a.survey_id
        AND n.invited_at <= a.answered_at AND n.invited_at >= a.answered_at - CAST(:window AS interval)
      ORDER BY n.invited_at DESC, n.invitation_id DESC LIMIT 1)
)"""


# domain.answered, for the given people, against everything stored of them; each invitation whose
# `answered` differs from the rule's is set and handed back with its new value. Every lookup goes
# through an index (a person's answers; a person's invitations to a survey by time), and the
# answered set is hash-joined: no scan of the batch's rows per row.
_REMATCH = f"""
    WITH people AS (  -- nothing can change for a person without an answer or an answered invitation
        SELECT DISTINCT k FROM unnest(CAST(:keys AS text[])) AS k
        WHERE EXISTS (SELECT 1 FROM {SCHEMA}.rate_answers a WHERE a.respondent_key = k)
           OR EXISTS (SELECT 1 FROM {SCHEMA}.rate_invitations i WHERE i.respondent_key = k AND i.answered)
    ),
    hit AS (
        SELECT DISTINCT {_PICK_OF} AS invitation_id
        FROM {SCHEMA}.rate_answers a JOIN people ON a.respondent_key = people.k
    ), wanted AS (
        SELECT i.invitation_id, h.invitation_id IS NOT NULL AS answered
        FROM {SCHEMA}.rate_invitations i JOIN people ON i.respondent_key = people.k
        LEFT JOIN hit h ON h.invitation_id = i.invitation_id
    )
    UPDATE {SCHEMA}.rate_invitations r SET answered = wanted.answered
    FROM wanted
    WHERE r.invitation_id = wanted.invitation_id AND r.answered <> wanted.answered
    RETURNING r.segments, r.day, r.answered
"""


async def rematch(conn: AsyncConnection, keys: Iterable[str], window: timedelta, deltas: Deltas) -> None:
    """The rule applied again to everything stored of these people (an erasure took some of their
    rows, or a new invitation may be what one of their answers now picks)."""
    people = sorted(set(keys))
    if not people:
        return
    flipped = await conn.execute(sa.text(_REMATCH), {"keys": people, "window": window})
    for row in flipped:
        _add(deltas, row.segments, row.day, 0, 1 if row.answered else -1)


# The people a batch's new invitations can change anything for: an answer of theirs names one, or
# is to its survey within the window after it (it may now be the answer's latest invitation). Each
# new invitation is one probe of its person's answers (rate_answers_person).
_MAY_BE_PICKED = f"""
    SELECT DISTINCT i.respondent_key FROM {SCHEMA}.rate_invitations i
    WHERE i.invitation_id = ANY(string_to_array($1, $2)) AND EXISTS (
        SELECT 1 FROM {SCHEMA}.rate_answers a
        WHERE a.respondent_key = i.respondent_key AND (
            a.invitation_id = i.invitation_id
            OR (a.survey_id = i.survey_id AND a.answered_at >= i.invited_at
                AND a.answered_at <= i.invited_at + CAST($3 AS interval))))
"""


async def may_be_picked(conn: AsyncConnection, invitations: Sequence[Invited], window: timedelta) -> set[str]:
    """The keys of the people whose matching these (stored, new) invitations can change."""
    if not invitations:
        return set()
    rows = await fetch(conn, _MAY_BE_PICKED, *split_list([i.invitation_id for i in invitations]), window)
    return {r[0] for r in rows}


# A new answer changes no other answer's pick (each answer's pick depends only on it and its
# person's invitations): the answered set only gains the new answers' picks.
_PICK = f"""
    WITH picked AS (
        SELECT DISTINCT {_PICK_OF} AS invitation_id
        FROM {SCHEMA}.rate_answers a WHERE a.response_id = ANY(CAST(:ids AS text[]))
    )
    UPDATE {SCHEMA}.rate_invitations r SET answered = true
    FROM picked WHERE r.invitation_id = picked.invitation_id AND NOT r.answered
    RETURNING r.segments, r.day
"""


async def pick(conn: AsyncConnection, answers: Sequence[Answer], window: timedelta, deltas: Deltas) -> None:
    """The invitations these new answers pick become answered (those that were not yet)."""
    if not answers:
        return
    picked = await conn.execute(sa.text(_PICK), {"ids": [a.response_id for a in answers], "window": window})
    for row in picked:
        _add(deltas, row.segments, row.day, 0, 1)


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


async def spans_of(conn: AsyncConnection, segments: Sequence[str], days: DayRange) -> dict[str, dict[date, Rate]]:
    """Each segment's days with invitations in the range, for the segments that have rates there
    (a segment whose invitations were all erased maps to {}: its rates are none now; one that never
    had any is left out)."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT segment, day, invited, responded FROM {SCHEMA}.rate_daily
                WHERE segment = ANY(CAST(:segments AS text[])) AND day BETWEEN :first AND :last"""
        ),
        {"segments": list(segments), "first": days.first, "last": days.last},
    )
    found: dict[str, dict[date, Rate]] = {}
    for r in rows:
        held = found.setdefault(r.segment, {})
        if r.invited > 0:
            held[r.day] = Rate(r.invited, r.responded)
    return found


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
    """Everything stored (the tests' recompute input)."""
    invitations = [
        Invited(r.invitation_id, r.respondent_key, r.survey_id, r.invited_at, r.day, split(r.segments), r.accepted_at)
        for r in await conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.rate_invitations"))
    ]
    answers = [
        Answer(r.response_id, r.respondent_key, r.survey_id, r.answered_at, r.invitation_id, r.accepted_at)
        for r in await conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.rate_answers"))
    ]
    return invitations, answers
