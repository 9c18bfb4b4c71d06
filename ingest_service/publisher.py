"""The port ingest publishes through, and its Kafka adapter. The adapter sends the request's id
(shared/logs.py) as the `x-request-id` header of every record, for consumers to log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.kafka import BatchSender
from shared.logs import headers_for, kafka_headers


class PublishFailed(Exception):
    """The broker did not acknowledge in time: the client must retry (nothing was promised)."""


class Publisher(Protocol):
    timeout_s: float  # how long a publish waits for the broker's acknowledgement

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return only once the broker has acknowledged the event; raise PublishFailed otherwise."""
        ...

    async def publish_many(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes]],
        request_ids: Sequence[str | None] | None = None,
        timeout_s: float | None = None,
    ) -> list[bool]:
        """Publish (key, value) pairs, each with the id of the request it came from (by position;
        by default the current request's); True for each the broker acknowledged in time (within
        `timeout_s` if given, else `self.timeout_s`)."""
        ...


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self.timeout_s = timeout_s
        self._batches = BatchSender(producer)

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._producer.send_and_wait(topic, value=value, key=key, headers=kafka_headers())
        except (TimeoutError, KafkaError, OSError) as exc:
            raise PublishFailed(type(exc).__name__) from exc

    async def publish_many(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes]],
        request_ids: Sequence[str | None] | None = None,
        timeout_s: float | None = None,
    ) -> list[bool]:
        """The items as record batches, one per partition (a request's 1,000 items are ~6 futures,
        not 1,000); an item is acknowledged when its batch is."""
        sent: list[asyncio.Future[object]] = []
        records = [(topic, k, v) for k, v in items]
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                if request_ids is None:
                    sent = await self._batches.send(records, kafka_headers() or ())
                else:
                    sent = await self._batches.send(records, each=[headers_for(r) for r in request_ids])
                if sent:
                    await asyncio.wait(set(sent))
        except (TimeoutError, KafkaError, OSError):
            pass  # what was acknowledged is reported; the rest is "unavailable", to be retried
        acked = {id(f): f.done() and not f.cancelled() and f.exception() is None for f in set(sent)}
        return [acked[id(f)] for f in sent] + [False] * (len(items) - len(sent))
