"""Ingest's database adapter: the record kept per response_id. All of ingest's SQL is here. Each
method is its own transaction, and a database that is away becomes StoreUnavailable here, in one
place, so the use cases never see a driver's error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import AnyStr

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest_service.domain import Submission
from ingest_service.invitations import Asked, Recorded
from shared import audit
from shared.db import HeldConnection, database_unavailable, driver_of, fetch_alone

log = logging.getLogger(__name__)

SCHEMA = "ingest"


class StoreUnavailable(Exception):
    """The database did not answer: nothing was promised, the client should retry."""


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    try:
        async with engine.begin() as conn:
            yield conn
    except Exception as exc:
        if database_unavailable(exc):
            raise StoreUnavailable(type(exc).__name__) from exc
        raise


@dataclass(frozen=True, slots=True)
class Revision:
    version: int
    respondent_id: str
    channel: str | None
    survey_id: str | None
    answered_at: datetime


# One pass through the primary key, whatever the planner knows: a first use is inserted (and its
# event logged), an id already recorded is "updated" to itself, which locks it and hands back the
# fingerprint it was first recorded with. `xmax = 0` tells the two apart: a row this statement
# inserted has no updater. An `= ANY(:ids)` read of the existing rows used to do this; its generic
# plan, cached while the table held a few pages, was a sequential scan, kept until autovacuum
# analyzed the table, so every flush read the whole table for minutes (docs/operations.md). Waiting on a
# concurrent insert of the same id (DO UPDATE does, a snapshot read did not) also means two
# workers given one id with two bodies cannot both accept it.
#
# The text columns and the events go as one value each, split by PostgreSQL on UNIT (0x1f): asyncpg
# checks every element of a list parameter against three abstract base classes, ~1.2 us of this
# process's CPU an item over six lists (a 1,000-item batch: 2.27 -> 1.07 ms). No value can hold
# UNIT: identifiers and the channel and survey are PLAIN (no control characters), a fingerprint is
# hex, an event is JSON (control characters escaped). A channel or survey without a value is sent
# as "", which PLAIN's minimum length of 1 keeps from meaning anything else; a lone "" splits into
# no element, and unnest pads the shorter array with NULL, which is what it stands for.
UNIT = "\x1f"
_SPLIT = "string_to_array({}, E'\\x1f')"
_RECORD = f"""
    WITH given AS (
        SELECT * FROM unnest({_SPLIT.format("$1::text")}, {_SPLIT.format("$2::text")}, {_SPLIT.format("$3::text")},
                             {_SPLIT.format("$4::text")}, {_SPLIT.format("$5::text")}, $6::timestamptz[],
                             {_SPLIT.format("convert_from($7::bytea, 'UTF8')")})
             AS x(id, respondent, fingerprint, channel, survey, answered_at, event)
    ), recorded AS (
        INSERT INTO {SCHEMA}.responses AS r
            (response_id, respondent_id, fingerprint, channel, survey_id, answered_at)
        SELECT id, respondent, fingerprint, nullif(channel, ''), nullif(survey, ''), answered_at FROM given
        ON CONFLICT (response_id) DO UPDATE SET fingerprint = r.fingerprint
        RETURNING r.response_id, r.respondent_id, r.fingerprint, r.xmax = 0 AS inserted
    ), logged AS (
        INSERT INTO {SCHEMA}.events (kind, respondent_id, event)
        SELECT 'response', recorded.respondent_id, convert_to(given.event, 'UTF8')
        FROM recorded JOIN given ON given.id = recorded.response_id
        WHERE recorded.inserted
    )
    SELECT response_id, fingerprint FROM recorded WHERE NOT inserted
"""


async def record_on(driver: asyncpg.Connection, items: Sequence[Submission]) -> dict[str, str]:
    """`_RECORD` for `items` (each id once), in response_id order, committed on its own."""
    items = sorted(items, key=lambda s: s.response_id)
    rows = await fetch_alone(
        driver,
        _RECORD,
        _joined([s.response_id for s in items], UNIT),
        _joined([s.respondent_id for s in items], UNIT),
        _joined([s.fingerprint for s in items], UNIT),
        _joined([s.channel or "" for s in items], UNIT),
        _joined([s.survey_id or "" for s in items], UNIT),
        [s.answered_at for s in items],
        _joined([s.event for s in items], UNIT.encode()),
    )
    return {row[0]: row[1] for row in rows}


def _joined(values: Sequence[AnyStr], unit: AnyStr) -> AnyStr:
    """The values, `unit` between each two; refused if one holds it (it would be split apart)."""
    joined = unit.join(values)
    if joined.count(unit) != max(0, len(values) - 1):
        raise ValueError("a value holds the unit separator (0x1f)")
    return joined


_LOG = sa.text(f"INSERT INTO {SCHEMA}.events (kind, respondent_id, event) VALUES (:kind, :r, :event)")


class ResponseStore:
    """The one row ingest keeps per response_id: the fingerprint of its first body (a retry is
    recognised, a reused id with another body refused) and what a revision needs to know. And the
    event log: each accepted event, in the same transaction, for `ingest_service.replay`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._held = HeldConnection(engine)  # record_group's

    async def record_all(self, items: Sequence[Submission]) -> dict[str, str]:
        """Record first uses of response_ids (each id once in `items`); returns {response_id:
        stored fingerprint} for the ids that were already recorded. Rows are locked in id order,
        so two writers with overlapping ids wait for each other instead of deadlocking."""
        try:
            async with self._engine.connect() as conn:
                return await record_on(await driver_of(conn), items)
        except Exception as exc:
            if database_unavailable(exc):
                raise StoreUnavailable(type(exc).__name__) from exc
            raise

    async def record_group(self, items: Sequence[Submission]) -> dict[str, str]:
        """`record_all` for the one task that records single POSTs' groups, one group at a time,
        on a connection it keeps: no pool checkout (and its ping) per group, and the statement
        commits on its own: one round trip, where the pool, BEGIN and COMMIT made four and cost
        ~400 us of this process's CPU a group. The asyncpg connection under it is looked up once
        (SQLAlchemy's `get_raw_connection` costs ~8 us, a greenlet's round trip, every time). A failed
        connection is dropped, and one a deadline closed; the next group opens another."""
        try:
            return await record_on(await self._held.driver(), items)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            await self._held.drop()
            raise StoreUnavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        """Give record_group's connection back (at shutdown, before the engine is disposed)."""
        await self._held.close()

    async def next_revision(self, response_id: str) -> Revision | None:
        async with transaction(self._engine) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        f"UPDATE {SCHEMA}.responses SET version = version + 1 WHERE response_id = :id "
                        "RETURNING version, respondent_id, channel, survey_id, answered_at"
                    ),
                    {"id": response_id},
                )
            ).first()
        if row is None:
            return None
        return Revision(row.version, row.respondent_id, row.channel, row.survey_id, row.answered_at)

    async def log_revision(self, respondent_id: str, event: bytes) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(_LOG, {"kind": "response", "r": respondent_id, "event": event})

    async def record_invitations(self, items: Sequence[Asked]) -> Recorded:
        """Record invitations (each id once in `items`) and log the events of the new ones, in one
        transaction: an id first seen is inserted; one seen before with the same body is a repeat,
        except a prompt's `dismissed` after its `shown`, which changes it; another body is a conflict.
        Ids are inserted and locked in order, so concurrent requests wait rather than deadlock."""
        items = sorted(items, key=lambda a: a.invitation_id)
        given = {a.invitation_id: a for a in items}
        async with transaction(self._engine) as conn:
            inserted = await conn.execute(
                sa.text(
                    f"""INSERT INTO {SCHEMA}.invitations (invitation_id, respondent_id, survey_id, how, invited_at, fingerprint)
                        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:people AS text[]), CAST(:surveys AS text[]),
                                             CAST(:hows AS text[]), CAST(:ats AS timestamptz[]), CAST(:prints AS text[]))
                        ON CONFLICT (invitation_id) DO NOTHING
                        RETURNING invitation_id"""
                ),
                {
                    "ids": list(given), "people": [a.respondent_id for a in items], "surveys": [a.survey_id for a in items],
                    "hows": [a.how for a in items], "ats": [a.invited_at for a in items],
                    "prints": [a.fingerprint for a in items],
                },
            )  # fmt: skip
            new = {r.invitation_id for r in inserted}
            rest = [i for i in given if i not in new]
            conflicts: set[str] = set()
            behind: set[str] = set()
            if rest:
                stored = await conn.execute(
                    sa.text(
                        f"SELECT invitation_id, fingerprint, how FROM {SCHEMA}.invitations "
                        "WHERE invitation_id = ANY(CAST(:ids AS text[])) ORDER BY invitation_id FOR UPDATE"
                    ),
                    {"ids": rest},
                )
                dismissed = []
                for row in stored:
                    item = given[row.invitation_id]
                    if row.fingerprint != item.fingerprint:
                        conflicts.add(row.invitation_id)
                    elif row.how == "shown" and item.how == "dismissed":
                        dismissed.append(row.invitation_id)
                    elif row.how == "dismissed" and item.how == "shown":
                        behind.add(row.invitation_id)
                if dismissed:
                    await conn.execute(
                        sa.text(
                            f"UPDATE {SCHEMA}.invitations SET how = 'dismissed', changed_at = now() "
                            "WHERE invitation_id = ANY(CAST(:ids AS text[]))"
                        ),
                        {"ids": dismissed},
                    )
                    new.update(dismissed)
            logged = [given[i] for i in sorted(new)]
            if logged:
                await conn.execute(
                    sa.text(
                        f"""INSERT INTO {SCHEMA}.events (kind, respondent_id, event)
                            SELECT 'invitation', * FROM unnest(CAST(:people AS text[]), CAST(:events AS bytea[]))"""
                    ),
                    {"people": [a.respondent_id for a in logged], "events": [a.event for a in logged]},
                )
        return Recorded(frozenset(new), frozenset(conflicts), frozenset(behind))

    async def invited_at(self, invitation_id: str) -> datetime | None:
        async with transaction(self._engine) as conn:
            found: datetime | None = await conn.scalar(
                sa.text(f"SELECT invited_at FROM {SCHEMA}.invitations WHERE invitation_id = :id"), {"id": invitation_id}
            )
        return found

    async def forget_respondent(
        self, respondent_id: str, erasure_id: str, actor: str, event: bytes, respondent_key: str | None = None
    ) -> int:
        """Delete the respondent's rows and logged events, log the erasure event itself (kept only
        until every consumer has read it: `replay.Watermark.purge`), and record the erasure (by its
        id, never the person's) in the audit log, in one transaction."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                sa.text(f"DELETE FROM {SCHEMA}.responses WHERE respondent_id = :r"), {"r": respondent_id}
            )
            await conn.execute(sa.text(f"DELETE FROM {SCHEMA}.events WHERE respondent_id = :r"), {"r": respondent_id})
            await conn.execute(
                sa.text(f"DELETE FROM {SCHEMA}.invitations WHERE respondent_id = :r"), {"r": respondent_id}
            )
            await conn.execute(_LOG, {"kind": "erasure", "r": respondent_id, "event": event})
            if respondent_key is not None:  # the prompt is not shown to them again (ingest_service/prompt.py)
                await conn.execute(
                    sa.text(
                        f"INSERT INTO {SCHEMA}.erasures VALUES (:k, now()) "
                        "ON CONFLICT (respondent_key) DO UPDATE SET requested_at = now()"
                    ),
                    {"k": respondent_key},
                )
            await audit.record(conn, actor, "respondent.erasure_requested", erasure_id, {"responses": result.rowcount})
        return int(result.rowcount)
