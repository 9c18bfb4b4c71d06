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
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
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
        self._hashes: dict[bytes, int] = {}  # murmur2 of keys seen: a person's, a ticket's recur

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
                    await self._publish([(r.topic, r.key, r.value) for r in rows])
                    await conn.execute(
                        sa.text(f"DELETE FROM {self._schema}.outbox WHERE id = ANY(:ids)"),
                        {"ids": [r.id for r in rows]},
                    )
                published += len(rows)
                if len(rows) < self._batch:
                    return published

    async def _publish(self, rows: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """Send rows in their order per partition, as record batches the relay fills itself: one
        future per batch rather than one per message, and each key's partition computed once (the
        producer's own murmur2 is pure Python). Partitions are the Java client's (murmur2 of the
        key), the same as `producer.send` picks."""
        partitions: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], BatchBuilder] = {}
        sent: list[asyncio.Future[Any]] = []
        for topic, key, value in rows:
            if topic not in partitions:
                partitions[topic] = sorted(await self._producer.partitions_for(topic))
            if key is None:
                sent.append(await self._producer.send(topic, value=value))  # no key, no order to keep
                continue
            partition = self._partition_of(key, partitions[topic])
            batch = batches.get((topic, partition))
            if batch is not None and batch.append(timestamp=None, key=key, value=value) is not None:
                continue
            if batch is not None:  # full: it goes, a new one follows it
                sent.append(await self._producer.send_batch(batch, topic, partition=partition))
            batch = batches[(topic, partition)] = self._producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value) is None:  # larger than a batch holds
                del batches[(topic, partition)]
                sent.append(await self._producer.send(topic, value=value, key=key, partition=partition))
        for (topic, partition), batch in batches.items():
            batch.close()
            sent.append(await self._producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    def _partition_of(self, key: bytes, partitions: list[int]) -> int:
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= 100_000:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[hashed % len(partitions)]
