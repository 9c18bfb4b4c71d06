"""Erasure, as every consuming service applies it: pseudonyms for personal ids (what a service
keeps to recognise a person later without keeping who they are), and the erasure requests it
remembers to apply to events that arrive after them."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import RespondentErased


@functools.lru_cache(maxsize=65_536)  # a respondent's events arrive together (one partition)
def respondent_key(respondent_id: str) -> str:
    """SHA-256 of the respondent id: enough to apply an erasure, not the id itself. The same in
    SQL, for migrations: encode(sha256(convert_to(respondent_id, 'UTF8')), 'hex')."""
    return hashlib.sha256(respondent_id.encode()).hexdigest()


def latest_requests(events: Iterable[object]) -> dict[str, datetime]:
    """The latest erasure request per respondent key among a batch's events."""
    requested: dict[str, datetime] = {}
    for event in events:
        if isinstance(event, RespondentErased):
            key = respondent_key(event.respondent_id)
            requested[key] = max(requested.get(key, event.requested_at), event.requested_at)
    return requested


class Erasures:
    """The erasure requests a service remembers, in its own `<schema>.erasures` table (respondent
    key, latest request), so an erasure also covers that person's events that arrive after it."""

    def __init__(self, schema: str) -> None:
        self._schema = schema

    async def record(self, conn: AsyncConnection, requested: Mapping[str, datetime]) -> dict[str, datetime]:
        """Store the latest request per key; returns the latest stored for each (old or new)."""
        if not requested:
            return {}
        keys = sorted(requested)  # one lock order for concurrent writers
        rows = await conn.execute(
            sa.text(
                f"""
                INSERT INTO {self._schema}.erasures AS e (respondent_key, requested_at)
                SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[]))
                ON CONFLICT (respondent_key) DO UPDATE SET
                    requested_at = greatest(e.requested_at, EXCLUDED.requested_at)
                RETURNING respondent_key, requested_at
                """
            ),
            {"keys": keys, "times": [requested[k] for k in keys]},
        )
        return {r.respondent_key: r.requested_at for r in rows}

    async def of(self, conn: AsyncConnection, keys: Iterable[str]) -> dict[str, datetime]:
        """The stored request of each of these keys that has one."""
        rows = await conn.execute(
            sa.text(
                f"SELECT respondent_key, requested_at FROM {self._schema}.erasures WHERE respondent_key = ANY(:keys)"
            ),
            {"keys": sorted(set(keys))},
        )
        return {r.respondent_key: r.requested_at for r in rows}
