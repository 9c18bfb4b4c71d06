"""Erasure, as every consuming service applies it: stored keys converted to pseudonyms
(`shared.pseudonyms`) by migrations, and the erasure requests a service remembers to apply to
events that arrive after them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import split_list
from shared.pseudonyms import Pseudonyms


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
        joined, sep = split_list(set(keys))
        rows = await conn.execute(
            sa.text(
                f"SELECT respondent_key, requested_at FROM {self._schema}.erasures "
                "WHERE respondent_key = ANY(string_to_array(:keys, :sep))"
            ),
            {"keys": joined, "sep": sep},
        )
        return {r.respondent_key: r.requested_at for r in rows}
