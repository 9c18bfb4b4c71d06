"""The port ingest publishes through, and its Kafka adapter."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


class PublishFailed(Exception):
    """The broker did not acknowledge in time: the client must retry (nothing was promised)."""


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return only once the broker has acknowledged the event; raise PublishFailed otherwise."""
        ...


class KafkaPublisher:
    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            await asyncio.wait_for(self._producer.send_and_wait(topic, value=value, key=key), self._timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise PublishFailed(type(exc).__name__) from exc
