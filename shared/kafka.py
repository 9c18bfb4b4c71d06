"""Kafka plumbing every service shares: producers, consumers, topics, reachability."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.settings import InfraSettings, ServiceSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
MAX_BATCH_BYTES = 512 * 1024
_M = 0x5BD1E995  # murmur2's mixing constant


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 of a key (what its default partitioner, and aiokafka's, hash),
    reading the key a 32-bit word at a time: about twice as fast as aiokafka's byte-by-byte copy,
    which is pure Python too. A property test holds the two equal."""
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    rest = length & 3
    if rest:
        tail = data[words * 4 :]
        if rest == 3:
            h ^= tail[2] << 16
        if rest >= 2:
            h ^= tail[1] << 8
        h = ((h ^ tail[0]) * _M) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


Record = tuple[str, bytes | None, bytes]  # topic, key, value


class BatchSender:
    """Sends records as record batches it fills itself: one future and one accumulator entry per
    batch rather than per record, and each key's partition computed once (murmur2 is pure Python,
    ours word by word; keys recur). Partitions are the Java client's (murmur2 of the key, positive,
    modulo the count), the ones `producer.send` picks; each partition's records keep their order."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._hashes: dict[bytes, int] = {}

    async def send(
        self,
        records: Sequence[Record],
        headers: Sequence[tuple[str, bytes]] = (),
        each: Sequence[list[tuple[str, bytes]]] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Queue the records, with `headers` on each, or each with its own (`each`, by position);
        one future per record (a batch's records share one), set once the broker has acknowledged
        it. Raises what the producer raises while queueing."""
        producer = self._producer
        common = list(headers)  # the record builder takes a list only
        futures: list[asyncio.Future[Any] | None] = [None] * len(records)
        batches: dict[tuple[str, int], tuple[BatchBuilder, list[int]]] = {}
        partitions: dict[str, list[int]] = {}

        async def single(
            i: int, topic: str, key: bytes | None, value: bytes, partition: int | None, headers: list[Any]
        ) -> None:
            futures[i] = await producer.send(topic, value=value, key=key, partition=partition, headers=headers)

        async def go(topic: str, partition: int, batch: BatchBuilder, members: list[int]) -> None:
            batch.close()
            sent = await producer.send_batch(batch, topic, partition=partition)
            for i in members:
                futures[i] = sent

        for i, (topic, key, value) in enumerate(records):
            headers = common if each is None else each[i]
            if key is None:  # no key, no order to keep
                await single(i, topic, None, value, None, headers)
                continue
            known = partitions.get(topic)
            if known is None:
                known = partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = known[self._hash(key) % len(known)]
            current = batches.get((topic, partition))
            if current is not None:
                if current[0].append(timestamp=None, key=key, value=value, headers=headers) is not None:
                    current[1].append(i)
                    continue
                await go(topic, partition, *current)  # full: it goes, a new one follows it
            batch = producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:  # larger than a batch
                batches.pop((topic, partition), None)
                await single(i, topic, key, value, partition, headers)
                continue
            batches[(topic, partition)] = (batch, [i])
        for (topic, partition), (batch, members) in batches.items():
            await go(topic, partition, batch, members)
        # Every record has its future now, at its own position (publish_many maps them back by it).
        return cast(list[asyncio.Future[Any]], futures)

    def _hash(self, key: bytes) -> int:
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= 100_000:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed


def make_producer(settings: InfraSettings, *, client_id: str, linger_ms: int = 5) -> AIOKafkaProducer:
    # Idempotent and transactional producers are refused by the local broker (InitProducerId);
    # correctness never depends on them: consumers write idempotently instead, which is also the
    # safer design on Apache Kafka, whose transaction protocol Jepsen found to lose or duplicate writes.
    return AIOKafkaProducer(
        bootstrap_servers=settings.require_bootstrap(),
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        # Record batches up to 512 KiB (the client's default is 16 KiB): an outbox relay sending a
        # backlog fills ~30x fewer, each a future, a request slot and a CRC; half Kafka's default
        # message.max.bytes, so any broker takes them.
        max_batch_size=MAX_BATCH_BYTES,
    )


def make_consumer(settings: ServiceSettings, *topics: str, group_id: str, client_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.require_bootstrap(),
        group_id=group_id,
        group_instance_id=settings.consumer_instance_id or None,  # "" turns it off
        client_id=client_id,
        enable_auto_commit=False,  # offsets are committed by the loop, after the database commit
        auto_offset_reset="earliest",
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_heartbeat_ms,
        rebalance_timeout_ms=settings.consumer_rebalance_timeout_ms,
        max_poll_interval_ms=max(300_000, settings.consumer_rebalance_timeout_ms),
    )


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int, replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created. Safe to repeat."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="nps-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=replication) for t in missing]
        )
        created = []
        for name, code, message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: {message} (error {code})")
        return created
    finally:
        await admin.close()


async def broker_reachable(producer: AIOKafkaProducer, timeout: float = 1.0) -> bool:
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
    except (TimeoutError, KafkaError, OSError):
        return False
    return True


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer.client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions or ())]


@asynccontextmanager
async def group_reader(bootstrap: str, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of `group` that never joins it: it reads the group's committed offsets without
    taking part in the group (tansu does not answer the admin API's offsets call)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def group_committed(bootstrap: str, group: str, topic: str) -> int:
    """The messages a consumer group has committed on a topic, over all its partitions."""
    async with group_reader(bootstrap, group) as consumer:
        return sum([await consumer.committed(tp) or 0 for tp in await _partitions(consumer, topic)])


async def group_lag(bootstrap: str, group: str, topics: Sequence[str]) -> dict[str, int]:
    """Per topic, the messages it holds beyond what the group committed (`nps status`)."""
    async with group_reader(bootstrap, group) as consumer:
        found = {}
        for topic in topics:
            partitions = await _partitions(consumer, topic)
            ends = await consumer.end_offsets(partitions) if partitions else {}
            committed = [await consumer.committed(tp) or 0 for tp in partitions]
            found[topic] = sum(max(0, ends[tp] - c) for tp, c in zip(partitions, committed, strict=True))
        return found


class TopicMissing(LookupError):
    pass


@asynccontextmanager
async def reading_from_start(bootstrap: str, topic: str, wait_s: float = 0.0) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer in no group, assigned every partition of `topic` at its first offset: how a
    rebuild, a test or a benchmark reads a whole topic. TopicMissing if the topic has no
    partitions within `wait_s` (metadata of a topic just created can take a moment)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + wait_s
        while not partitions and time.monotonic() < deadline:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissing(f"topic {topic} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        yield consumer
    finally:
        await consumer.stop()
