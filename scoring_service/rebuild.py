"""`nps scoring rebuild`: recompute the aggregates, from the stored responses or from the log.

- default: every daily count from the stored responses, in one transaction (the live service may
  keep running: the table is locked for the few seconds it takes);
- `--check`: compare the daily counts with that recompute and report, changing nothing;
- `--replay`: read the responses topic from the beginning into an empty scoring schema, with the
  service's own batch handler (what a new deployment or a lost database needs).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from scoring_service import repository
from scoring_service.handlers import CountResponses
from scoring_service.settings import ScoringSettings
from shared.consumer import Message
from shared.db import make_engine
from shared.events import ResponseEvent, decoder, response_events

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Report:
    what: str
    events: int = 0
    undecodable: int = 0
    seconds: float = 0.0
    daily_rows: int = 0
    differences: int = 0

    def describe(self) -> str:
        rate = f" ({self.events / self.seconds:,.0f} events/s)" if self.events and self.seconds else ""
        parts = [f"{self.what}: {self.daily_rows:,} daily counts"]
        if self.events:
            parts.append(f"{self.events:,} events read in {self.seconds:.1f}s{rate}")
        if self.undecodable:
            parts.append(f"{self.undecodable:,} undecodable events skipped (see the dead-letter topic)")
        if self.what == "check":
            parts.append(f"{self.differences:,} differ from a recompute")
        return "; ".join(parts)


_DIFFERENCES = sa.text(
    f"""
    WITH recomputed AS ({repository.RECOMPUTED}), live AS (
        SELECT segment, day, promoters, passives, detractors FROM {repository.SCHEMA}.daily_counts
        WHERE promoters + passives + detractors > 0
    )
    SELECT count(*) FROM ((SELECT * FROM recomputed EXCEPT SELECT * FROM live)
                          UNION ALL (SELECT * FROM live EXCEPT SELECT * FROM recomputed)) AS d
    """
)


async def from_responses(engine: AsyncEngine) -> Report:
    started = time.perf_counter()
    async with engine.begin() as conn:
        rows = await repository.rebuild_daily(conn)
    return Report("rebuild", daily_rows=rows, seconds=time.perf_counter() - started)


async def check(engine: AsyncEngine) -> Report:
    async with engine.connect() as conn:
        differences = (await conn.execute(_DIFFERENCES)).scalar_one()
        rows = (await conn.execute(sa.text(f"SELECT count(*) FROM {repository.SCHEMA}.daily_counts"))).scalar_one()
    return Report("check", daily_rows=int(rows), differences=int(differences))


class NotEmpty(RuntimeError):
    pass


async def replay(settings: ScoringSettings, engine: AsyncEngine, *, batch: int = 10_000, idle_polls: int = 3) -> Report:
    """The responses topic from offset 0, through the service's handler, one transaction a batch."""
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text(f"SELECT count(*) FROM {repository.SCHEMA}.responses"))).scalar_one()
    if stored:
        raise NotEmpty(
            f"the scoring schema already holds {stored:,} responses: replay fills an empty one "
            "(use plain `nps scoring rebuild` to recompute from them)"
        )
    handler = CountResponses(settings.segment_dimensions, settings.max_values_per_dimension, lambda: datetime.now(UTC))
    decode = decoder(response_events)
    topic = settings.topics.responses
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.require_bootstrap(), enable_auto_commit=False)
    await consumer.start()
    events = undecodable = 0
    started = time.perf_counter()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        quiet = 0
        while quiet < idle_polls:  # end offsets alone are not trusted (tansu's lag behind fetches)
            records = await consumer.getmany(timeout_ms=500, max_records=batch)
            if not records:
                quiet += 1
                continue
            quiet = 0
            messages: list[Message[ResponseEvent]] = []
            for tp_records in records.values():
                for r in tp_records:
                    try:
                        event = decode(r.value or b"")
                    except (ValidationError, ValueError):
                        undecodable += 1
                        continue
                    messages.append(Message(event, r.topic, r.partition, r.offset, r.timestamp))
            async with engine.begin() as conn:
                await handler(conn, messages)
            events += sum(len(v) for v in records.values())
    finally:
        await consumer.stop()
    seconds = time.perf_counter() - started - 0.5 * idle_polls  # the idle polls that ended it
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(f"SELECT count(*) FROM {repository.SCHEMA}.daily_counts"))).scalar_one()
    return Report("replay", events=events, undecodable=undecodable, seconds=max(seconds, 1e-9), daily_rows=int(rows))


async def run(settings: ScoringSettings, *, replay_log: bool, check_only: bool) -> int:
    engine = make_engine(settings.require_database_url())
    gc.freeze()  # as the services do after start-up: full collections skip the long-lived heap
    try:
        if check_only:
            report = await check(engine)
        elif replay_log:
            report = await replay(settings, engine)
        else:
            report = await from_responses(engine)
    except NotEmpty as exc:
        print(f"nps scoring rebuild --replay: {exc}")
        return 2
    finally:
        await engine.dispose()
    print(report.describe())
    return 1 if report.differences else 0
