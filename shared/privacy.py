"""Erasure, as every consuming service applies it: pseudonyms for personal ids (what a service
keeps to recognise a person later without keeping who they are), and the erasure requests it
remembers to apply to events that arrive after them."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import RespondentErased
from shared.wire import Erased

MIN_SECRET_LENGTH = 32


class Pseudonyms:
    """The key a service keeps for a respondent id: HMAC-SHA256, under the deployment's secret
    (`NPS_PSEUDONYM_SECRET`), of the id's SHA-256 in hex. Without the secret a guessable id
    (an email, a user number) cannot be tested against a stored key. The inner SHA-256 is what
    keys were before the secret existed, so migrations convert stored keys without the ids
    (`rekey`). Every service must use the same secret, and it must never change."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the pseudonym secret must be at least {MIN_SECRET_LENGTH} characters")
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        # A respondent's events arrive together (one partition): a small cache saves most hashes.
        self.key = functools.lru_cache(maxsize=65_536)(self._key)

    def _key(self, respondent_id: str) -> str:
        return self.rekey(hashlib.sha256(respondent_id.encode()).hexdigest())

    def token(self, purpose: str, value: str) -> bytes:
        """An unguessable, stable value derived from `value` for `purpose` (e.g. a referral code):
        HMAC under the same secret, kept apart from respondent keys by the purpose label."""
        mac = self._mac.copy()
        mac.update(f"{purpose}\0{value}".encode())
        return mac.digest()

    def rekey(self, unkeyed: str) -> str:
        """The key for a stored unkeyed one (the plain SHA-256 hex of an id)."""
        mac = self._mac.copy()
        mac.update(unkeyed.encode())
        return mac.hexdigest()

    def latest_requests(self, events: Iterable[object]) -> dict[str, datetime]:
        """The latest erasure request per respondent key among a batch's events."""
        requested: dict[str, datetime] = {}
        for event in events:
            if isinstance(event, RespondentErased | Erased):
                key = self.key(event.respondent_id)
                requested[key] = max(requested.get(key, event.requested_at), event.requested_at)
        return requested


def rekey_columns(conn: Connection, pseudonyms: Pseudonyms | None, columns: Iterable[tuple[str, str]]) -> int:
    """Migrations: turn the unkeyed respondent keys in these (table, column) pairs into keyed ones.
    Returns how many distinct keys were converted. Without a secret this only works on empty tables."""
    converted = 0
    for table, column in columns:
        old = [r[0] for r in conn.execute(sa.text(f"SELECT DISTINCT {column} FROM {table}"))]
        if not old:
            continue
        if pseudonyms is None:
            raise RuntimeError(
                f"{table} holds respondent keys to convert to keyed hashes: set NPS_PSEUDONYM_SECRET "
                "(the same secret every service runs with) and migrate again"
            )
        for start in range(0, len(old), 10_000):
            chunk = old[start : start + 10_000]
            conn.execute(
                sa.text(
                    f"""
                    UPDATE {table} t SET {column} = m.new
                    FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS m(old, new)
                    WHERE t.{column} = m.old
                    """
                ),
                {"old": chunk, "new": [pseudonyms.rekey(k) for k in chunk]},
            )
        converted += len(old)
    return converted


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
        from shared.db import split_list  # here: shared.db imports shared.settings, which imports this

        joined, sep = split_list(set(keys))
        rows = await conn.execute(
            sa.text(
                f"SELECT respondent_key, requested_at FROM {self._schema}.erasures "
                "WHERE respondent_key = ANY(string_to_array(:keys, :sep))"
            ),
            {"keys": joined, "sep": sep},
        )
        return {r.respondent_key: r.requested_at for r in rows}
