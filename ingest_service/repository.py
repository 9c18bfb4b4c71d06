"""All of ingest's SQL: API keys and the one record ingest keeps per response_id. Never commits,
except the two writers below that own their transaction (the batching recorder, the key CLI)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

SCHEMA = "ingest"


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    response_id: str
    respondent_id: str
    fingerprint: str
    channel: str | None
    survey_id: str | None
    answered_at: datetime


@dataclass(frozen=True, slots=True)
class Revision:
    version: int
    respondent_id: str
    channel: str | None
    survey_id: str | None
    answered_at: datetime


# The outer SELECT sees the snapshot from before the INSERT, so it returns exactly the rows that
# already existed: the conflicts, with the fingerprint they were first recorded with.
_RECORD = sa.text(
    f"""
    WITH new AS (
        INSERT INTO {SCHEMA}.responses (response_id, respondent_id, fingerprint, channel, survey_id, answered_at)
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:respondents AS text[]), CAST(:fingerprints AS text[]),
            CAST(:channels AS text[]), CAST(:surveys AS text[]), CAST(:answered AS timestamptz[]))
        ON CONFLICT (response_id) DO NOTHING
        RETURNING response_id
    )
    SELECT response_id, fingerprint FROM {SCHEMA}.responses WHERE response_id = ANY(CAST(:ids AS text[]))
    """
)


async def record(conn: AsyncConnection, records: Sequence[ResponseRecord]) -> dict[str, str]:
    """Record first uses of response_ids; returns {response_id: stored fingerprint} for the ids
    that were already recorded (which the caller compares with the new fingerprint)."""
    rows = await conn.execute(
        _RECORD,
        {
            "ids": [r.response_id for r in records],
            "respondents": [r.respondent_id for r in records],
            "fingerprints": [r.fingerprint for r in records],
            "channels": [r.channel for r in records],
            "surveys": [r.survey_id for r in records],
            "answered": [r.answered_at for r in records],
        },
    )
    return {row.response_id: row.fingerprint for row in rows}


async def next_revision(conn: AsyncConnection, response_id: str) -> Revision | None:
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


async def forget_respondent(conn: AsyncConnection, respondent_id: str) -> int:
    result = await conn.execute(
        sa.text(f"DELETE FROM {SCHEMA}.responses WHERE respondent_id = :r"), {"r": respondent_id}
    )
    return int(result.rowcount)


# --- API keys ---


class KeyExists(Exception):
    pass


async def create_key(conn: AsyncConnection, name: str, key_hash: str) -> None:
    existing = (
        await conn.execute(sa.text(f"SELECT revoked_at FROM {SCHEMA}.api_keys WHERE name = :n"), {"n": name})
    ).first()
    if existing is not None and existing.revoked_at is None:
        raise KeyExists(name)
    await conn.execute(
        sa.text(
            f"INSERT INTO {SCHEMA}.api_keys (name, key_hash) VALUES (:n, :h) "
            "ON CONFLICT (name) DO UPDATE SET key_hash = EXCLUDED.key_hash, created_at = now(), revoked_at = NULL"
        ),
        {"n": name, "h": key_hash},
    )


async def revoke_key(conn: AsyncConnection, name: str) -> bool:
    result = await conn.execute(
        sa.text(f"UPDATE {SCHEMA}.api_keys SET revoked_at = now() WHERE name = :n AND revoked_at IS NULL"),
        {"n": name},
    )
    return bool(result.rowcount)


async def list_keys(conn: AsyncConnection) -> list[tuple[str, datetime, datetime | None]]:
    rows = await conn.execute(sa.text(f"SELECT name, created_at, revoked_at FROM {SCHEMA}.api_keys ORDER BY name"))
    return [(r.name, r.created_at, r.revoked_at) for r in rows]


async def active_keys(conn: AsyncConnection) -> dict[str, str]:
    rows = await conn.execute(sa.text(f"SELECT key_hash, name FROM {SCHEMA}.api_keys WHERE revoked_at IS NULL"))
    return {r.key_hash: r.name for r in rows}


async def key_is_active(conn: AsyncConnection, key_hash: str) -> bool:
    row = (
        await conn.execute(
            sa.text(f"SELECT 1 FROM {SCHEMA}.api_keys WHERE key_hash = :h AND revoked_at IS NULL"), {"h": key_hash}
        )
    ).first()
    return row is not None


class KeyCache:
    """Active key hashes, reloaded every `refresh_s`: a new or revoked key takes effect within
    that time, and no request waits on the database to be authenticated."""

    def __init__(self, engine: AsyncEngine, refresh_s: float) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._keys: dict[str, str] = {}

    def name_of(self, key_hash: str) -> str | None:
        return self._keys.get(key_hash)

    async def load(self) -> None:
        async with self._engine.connect() as conn:
            self._keys = await active_keys(conn)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.load()
            except Exception as exc:  # keep the last good set; the database may be back soon
                log.warning("could not reload API keys (%s); keeping the %d known", type(exc).__name__, len(self._keys))


class BatchingRecorder:
    """Records response ids for concurrent requests in shared transactions: while one INSERT is
    in flight, the next requests queue up and go together in the following one (group commit).
    At low load a request waits for one round trip; at high load one round trip serves hundreds."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 2_000) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._pending: list[tuple[ResponseRecord, asyncio.Future[str | None]]] = []
        self._wakeup = asyncio.Event()

    async def record(self, item: ResponseRecord) -> str | None:
        """None for a first use of the id, else the fingerprint it was first recorded with."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[ResponseRecord, asyncio.Future[str | None]]]) -> None:
        # Two requests for one id in the same flush: the first is recorded, the second compared to it.
        first: dict[str, ResponseRecord] = {}
        for item, _ in batch:
            first.setdefault(item.response_id, item)
        try:
            async with self._engine.begin() as conn:
                existing = await record(conn, list(first.values()))
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for item, future in batch:
            if future.done():
                continue
            if item.response_id in existing:
                future.set_result(existing[item.response_id])
            elif first[item.response_id] is not item:
                future.set_result(first[item.response_id].fingerprint)
            else:
                future.set_result(None)
