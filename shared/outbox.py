"""Transactional outbox: events a handler produces are written to `<schema>.outbox` in the
handler's own transaction, and published only after that transaction committed.

A crash between the commit and the publish loses nothing (the rows are still there); a crash
between the publish and the delete publishes a row twice, which is why every outgoing event
carries a stable id (`ticket_id`, `followup_id`, ...) for its consumers to deduplicate on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import copy_rows
from shared.events import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes

    @classmethod
    def event(cls, topic: str, key: str, event: Event) -> Outgoing:
        return cls(topic=topic, key=key.encode(), value=event.to_bytes())


def create_outbox(op: Any, schema: str) -> None:
    """For migrations: the outbox table, the same in every schema."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=schema,
    )


async def enqueue(conn: AsyncConnection, schema: str, items: Sequence[Outgoing]) -> None:
    """Outbox rows in the caller's transaction, published in this order (their ids follow it)."""
    if items:
        await copy_rows(conn, f"{schema}.outbox", ("topic", "key", "value"), [(i.topic, i.key, i.value) for i in items])


class OutboxRelay:
    """Publishes committed outbox rows in id order, then deletes them.

    Rows are locked with SKIP LOCKED while they are in flight, so two replicas of a service
    never publish the same row at the same time."""

    def __init__(self, engine: AsyncEngine, producer: AIOKafkaProducer, schema: str, batch: int = 2_000):
        self._engine = engine
        self._producer = producer
        self._schema = schema
        self._batch = batch
        self._lock = asyncio.Lock()

    async def flush(self) -> int:
        published = 0
        async with self._lock:
            while True:
                async with self._engine.begin() as conn:
                    rows = (
                        await conn.execute(
                            sa.text(
                                f"SELECT id, topic, key, value FROM {self._schema}.outbox "
                                "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                            ),
                            {"n": self._batch},
                        )
                    ).all()
                    if not rows:
                        return published
                    sent = [await self._producer.send(r.topic, value=r.value, key=r.key) for r in rows]
                    await asyncio.gather(*sent)
                    await conn.execute(
                        sa.text(f"DELETE FROM {self._schema}.outbox WHERE id = ANY(:ids)"),
                        {"ids": [r.id for r in rows]},
                    )
                published += len(rows)
                if len(rows) < self._batch:
                    return published
