"""The port ingest publishes through, and its Kafka adapter. The adapter sends the request's id
(shared/logs.py) as the `x-request-id` header of every record, for consumers to log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.logs import kafka_headers


class PublishFailed(Exception):
    """The broker did not acknowledge in time: the client must retry (nothing was promised)."""


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return only once the broker has acknowledged the event; raise PublishFailed otherwise."""
        ...

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Publish (key, value) pairs; True for each the broker acknowledged within the timeout."""
        ...


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(topic, value=value, key=key, headers=kafka_headers()), self._timeout_s
            )
        except (TimeoutError, KafkaError, OSError) as exc:
            raise PublishFailed(type(exc).__name__) from exc

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        sent: list[asyncio.Future[object]] = []
        headers = kafka_headers()
        try:
            async with asyncio.timeout(self._timeout_s):
                for key, value in items:  # send() returns once the record is queued in a batch
                    sent.append(await self._producer.send(topic, value=value, key=key, headers=headers))
                if sent:
                    await asyncio.wait(sent)
        except (TimeoutError, KafkaError, OSError):
            pass  # what was acknowledged is reported; the rest is "unavailable", to be retried
        acked = [f.done() and not f.cancelled() and f.exception() is None for f in sent]
        return acked + [False] * (len(items) - len(sent))
