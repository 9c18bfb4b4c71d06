"""What a broker lost, published again.

Ingest logs every accepted event in its own database (`ingest.events`, same transaction as the
record of the response) for `replay_retention_hours`. The `Watermark` task follows the consumer
groups of the topics ingest publishes to (responses: `replay_groups`; invitations:
`replay_invitation_groups`): it samples the topics' end offsets every `replay_check_s`, and once
every group has committed past a sample on its topic, every event accepted before that sample's time
has been read by all of them; that time is the replay watermark. `replay()` publishes the logged events
accepted since a time (by default the watermark less `replay_margin_s`) in the order they were
accepted. Consumers are idempotent, so publishing more than was lost is safe.

`nps up` replays when its in-memory broker starts empty (at start, and when it restarts a broker
that died); `nps ingest replay --since` does it by hand on a real cluster (a topic deleted by
mistake, a retention that was too short)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_service import metrics
from ingest_service.repository import SCHEMA
from ingest_service.settings import IngestSettings
from shared.db import describe_failure, make_engine
from shared.kafka import make_producer

log = logging.getLogger(__name__)

REPLAY_CHUNK = 5_000
MAX_SAMPLES = 10_000


Ends = dict[str, dict[int, int]]  # topic -> partition -> end offset


@dataclass(frozen=True, slots=True)
class Sample:
    at: datetime
    ends: Ends


def reached(samples: Sequence[Sample], committed: Sequence[tuple[str, dict[int, int]]]) -> int | None:
    """The index of the newest sample every group has committed past on its topic (`committed`: a
    group's topic and its offsets; a missing partition counts as offset 0), or None. Pure: the rule
    the watermark advances by."""
    newest = None
    for i, sample in enumerate(samples):
        if all(
            offsets.get(p, 0) >= end for topic, offsets in committed for p, end in sample.ends.get(topic, {}).items()
        ):
            newest = i
    return newest


def went_back(before: Ends, after: Ends) -> list[tuple[str, int]]:
    """The partitions whose end offset is lower than before: the topic lost events (or was recreated)."""
    return sorted(
        (topic, p) for topic, ends in before.items() for p, end in ends.items() if after.get(topic, {}).get(p, 0) < end
    )


def ends_of(value: dict[str, Any] | None, first_topic: str) -> Ends:
    """The stored end offsets: {topic: {partition: end}}, or (before the watermark followed more than
    one topic) {partition: end} of `first_topic`, the responses topic."""
    if not value:
        return {}
    if all(key.isdigit() for key in value):
        return {first_topic: {int(p): int(end) for p, end in value.items()}}
    return {topic: {int(p): int(end) for p, end in ends.items()} for topic, ends in value.items()}


async def stored(engine: AsyncEngine, first_topic: str) -> tuple[datetime | None, Ends]:
    """The watermark, and the end offsets the topics had when it last advanced (empty after a replay)."""
    async with engine.connect() as conn:
        row = (await conn.execute(sa.text(f"SELECT at, ends FROM {SCHEMA}.replay_watermark"))).first()
    if row is None:
        return None, {}
    return row.at, ends_of(row.ends, first_topic)


async def watermark(engine: AsyncEngine) -> datetime | None:
    async with engine.connect() as conn:
        mark: datetime | None = await conn.scalar(sa.text(f"SELECT at FROM {SCHEMA}.replay_watermark"))
    return mark


class CommittedOffsets:
    """Each consumer group's committed offsets, read without joining it: one OffsetFetch per group
    for all of a topic's partitions, at the group's coordinator (found once, again after a failure).
    Read a partition at a time (AIOKafkaConsumer.committed), a step cost a request per group and
    partition: 48 with eight groups on six partitions, which at the tests' 0.5 s check kept the
    embedded broker ~6% of a core busy in an idle loop."""

    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self._admin = admin
        self._coordinators: dict[str, int] = {}

    async def of(self, group: str, partitions: Sequence[TopicPartition]) -> dict[int, int]:
        """{partition: committed offset}; a partition the group never committed is 0."""
        if group not in self._coordinators:
            self._coordinators[group] = await self._admin.find_coordinator(group)
        found = await self._admin.list_consumer_group_offsets(
            group, self._coordinators[group], partitions=list(partitions)
        )
        return {tp.partition: max(0, found[tp].offset) if tp in found else 0 for tp in partitions}

    def forget_coordinators(self) -> None:
        self._coordinators.clear()


class Watermark:
    """Advances the replay watermark and purges the event log: events past the retention, and
    erasure events (which name the person) once every consumer has read them."""

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap: str,
        follows: dict[str, Sequence[str]],
        *,
        margin: timedelta,
        retention: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        """`follows`: each topic (the responses topic first) and the consumer groups that read it."""
        self._engine = engine
        self._bootstrap = bootstrap
        self._topics = list(follows)
        self._follows = [(topic, group) for topic, groups in follows.items() for group in groups]
        self._margin = margin
        self._retention = retention
        self._clock = clock
        self._samples: list[Sample] = []
        self._frozen = False

    async def run(self, interval_s: float) -> None:
        ends = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False)
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id="nps-ingest-replay")
        await ends.start()
        try:
            await admin.start()
            committed = CommittedOffsets(admin)
            while True:
                try:
                    await self.step(ends, committed)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker or database away: try again at the next tick
                    committed.forget_coordinators()
                    log.warning("replay watermark not advanced: %s", describe_failure(exc))
                await asyncio.sleep(interval_s)
        finally:
            await admin.close()
            await ends.stop()

    async def step(self, ends_reader: AIOKafkaConsumer, groups: CommittedOffsets) -> None:
        now = self._clock()
        tps: dict[str, list[TopicPartition]] = {}
        for topic in self._topics:
            partitions = ends_reader.partitions_for_topic(topic)
            if not partitions:
                await ends_reader.force_metadata_update()
                return
            tps[topic] = [TopicPartition(topic, p) for p in sorted(partitions)]
        found = await ends_reader.end_offsets([tp for listed in tps.values() for tp in listed])
        ends: Ends = {topic: {tp.partition: found[tp] for tp in listed} for topic, listed in tps.items()}
        since, floor = await stored(self._engine, self._topics[0])
        lost = went_back(floor, ends)
        if lost:
            # The broker lost events (or a topic was recreated). Until a replay brings them back
            # (and clears the floor) the watermark stays, so no erasure event is purged unread.
            self._samples.clear()
            if not self._frozen:
                log.error(
                    "topics went back on partitions %s (the broker lost events, or a topic was recreated): "
                    "unless `nps up` replays them, run `nps ingest replay --since %s`",
                    ", ".join(f"{topic}[{p}]" for topic, p in lost),
                    (since - self._margin).isoformat() if since else "'<the time the loss began>'",
                )
            self._frozen = True
            return
        self._frozen = False
        self._samples.append(Sample(now, ends))
        del self._samples[:-MAX_SAMPLES]
        committed = [(topic, await groups.of(group, tps[topic])) for topic, group in self._follows]
        index = reached(self._samples, committed)
        if index is not None:
            sample = self._samples[index]
            del self._samples[: index + 1]
            await self._advance(sample)

    async def _advance(self, sample: Sample) -> None:
        async with self._engine.begin() as conn:
            stored = await conn.scalar(
                sa.text(
                    f"""
                    INSERT INTO {SCHEMA}.replay_watermark (id, at, ends) VALUES (true, :at, CAST(:ends AS jsonb))
                    ON CONFLICT (id) DO UPDATE SET
                        at = greatest({SCHEMA}.replay_watermark.at, EXCLUDED.at), ends = EXCLUDED.ends
                    RETURNING at
                    """
                ),
                {"at": sample.at, "ends": json.dumps(sample.ends)},
            )
            purged = await conn.execute(
                sa.text(
                    f"DELETE FROM {SCHEMA}.events WHERE accepted_at < :expired "
                    "OR (kind = 'erasure' AND accepted_at < :read)"
                ),
                {"expired": self._clock() - self._retention, "read": stored - self._margin},
            )
        metrics.REPLAY_WATERMARK.set(stored.timestamp())
        if purged.rowcount:
            log.debug("event log: %d events purged", purged.rowcount)


async def replay(
    engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, since: datetime | None, invitations: str | None = None
) -> int:
    """Publish the logged events accepted at or after `since` (all of them if None), in the order
    they were accepted, each acknowledged by the broker; returns how many. Responses and erasures go
    to `topic`, invitations to `invitations` (erasures to both: each topic forgets the person)."""
    after, total = 0, 0
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        f"SELECT seq, kind, respondent_id, event FROM {SCHEMA}.events "
                        "WHERE seq > :after AND (CAST(:since AS timestamptz) IS NULL OR accepted_at >= :since) "
                        "ORDER BY seq LIMIT :n"
                    ),
                    {"after": after, "since": since, "n": REPLAY_CHUNK},
                )
            ).all()
        if not rows:
            # The topic now holds what it lost: the watermark may advance again from its offsets as they are.
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"UPDATE {SCHEMA}.replay_watermark SET ends = NULL"))
            return total
        sent = []
        for r in rows:
            value, key = bytes(r.event), r.respondent_id.encode()
            if r.kind != "invitation":
                sent.append(await producer.send(topic, value=value, key=key))
            if invitations is not None and r.kind != "response":
                sent.append(await producer.send(invitations, value=value, key=key))
        await asyncio.gather(*sent)  # raises if the broker refused one: the replay stops, loudly
        after, total = rows[-1].seq, total + len(rows)


async def replay_start(engine: AsyncEngine, margin: timedelta) -> datetime | None:
    """Where a replay of what the consumers may not have read starts: the watermark less the
    margin; None (everything kept) when there is no watermark yet."""
    mark = await watermark(engine)
    return mark - margin if mark is not None else None


async def run_replay(settings: IngestSettings, since: datetime | Literal["watermark"] | None) -> int:
    """`replay()` with its own database engine and producer: for `nps up` and `nps ingest replay`."""
    engine = make_engine(settings.require_database_url())
    try:
        if since == "watermark":
            since = await replay_start(engine, settings.replay_margin)
        producer = make_producer(settings, client_id="nps-replay")
        await producer.start()
        try:
            count = await replay(engine, producer, settings.topics.responses, since, settings.topics.invitations)
        finally:
            await producer.stop()
    finally:
        await engine.dispose()
    log.info("replayed %d events accepted since %s", count, since.isoformat() if since else "the oldest kept")
    return count
