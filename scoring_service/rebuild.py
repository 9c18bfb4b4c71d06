"""`nps scoring rebuild` (and `nps themes rebuild`, the same for the theme counts): recompute the
aggregates, from the stored responses or from the log.

- default: every daily count from the stored responses, in one transaction (the live service may
  keep running: the table is locked for the few seconds it takes);
- `--check`: compare the daily counts with that recompute and report, changing nothing;
- `--replay`: read the responses topic from the beginning into an empty scoring schema, with the
  service's own batch handler (what a new deployment or a lost database needs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from scoring_service import repository
from scoring_service.bootstrap import count_responses
from scoring_service.handlers import SCORING, Counting
from scoring_service.repository import SCORES, Store
from scoring_service.settings import ScoringSettings
from shared.consumer import Message
from shared.db import make_engine
from shared.kafka import reading_from_start
from shared.service import tune_gc
from shared.wire import ResponseWire, decode_response

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


async def from_responses(engine: AsyncEngine, where: Store = SCORES) -> Report:
    started = time.perf_counter()
    async with engine.begin() as conn:
        rows = await repository.rebuild_daily(conn, where)
    return Report("rebuild", daily_rows=rows, seconds=time.perf_counter() - started)


async def check(engine: AsyncEngine, where: Store = SCORES) -> Report:
    async with engine.connect() as conn:
        differences = await repository.differences(conn, where)
        rows = await repository.count_rows(conn, where, where.daily)
    return Report("check", daily_rows=rows, differences=differences)


class NotEmpty(RuntimeError):
    pass


async def replay(
    settings: ScoringSettings,
    engine: AsyncEngine,
    *,
    batch: int = 10_000,
    idle_polls: int = 3,
    counting: Counting = SCORING,
) -> Report:
    """The responses topic from offset 0, through the service's handler (the themes consumer's with
    themes' counting), one transaction a batch."""
    where = counting.store
    async with engine.connect() as conn:
        stored = await repository.count_rows(conn, where, where.responses)
    if stored:
        command = f"nps {counting.service} rebuild"
        raise NotEmpty(
            f"{where.schema}.{where.responses} already holds {stored:,} responses: replay fills an empty one "
            f"(use plain `{command}` to recompute from them)"
        )
    handler = count_responses(settings, counting)
    events = undecodable = 0
    started = time.perf_counter()
    async with reading_from_start(settings.require_bootstrap(), settings.topics.responses) as consumer:
        quiet = 0
        while quiet < idle_polls:  # end offsets alone are not trusted (tansu's lag behind fetches)
            records = await consumer.getmany(timeout_ms=500, max_records=batch)
            if not records:
                quiet += 1
                continue
            quiet = 0
            messages: list[Message[ResponseWire]] = []
            for tp_records in records.values():
                for r in tp_records:
                    try:
                        event = decode_response(r.value or b"")
                    except (ValidationError, ValueError):
                        undecodable += 1
                        continue
                    messages.append(Message(event, r.topic, r.partition, r.offset, r.timestamp))
            async with engine.begin() as conn:
                await handler(conn, messages)
            events += sum(len(v) for v in records.values())
    seconds = time.perf_counter() - started - 0.5 * idle_polls  # the idle polls that ended it
    async with engine.connect() as conn:
        rows = await repository.count_rows(conn, where, where.daily)
    return Report("replay", events=events, undecodable=undecodable, seconds=max(seconds, 1e-9), daily_rows=rows)


async def run(settings: ScoringSettings, *, replay_log: bool, check_only: bool, counting: Counting = SCORING) -> int:
    """`nps scoring rebuild`, or with themes' counting `nps themes rebuild` (theme_responses, theme_daily)."""
    engine = make_engine(settings.require_database_url())
    where = counting.store
    # The collector as the consumers have it once started. At Python's default, a 200,000-event
    # replay spent ~0.35 s of its ~4.5 in collections; ~0.1 s with this.
    tune_gc()
    try:
        if check_only:
            report = await check(engine, where)
        elif replay_log:
            report = await replay(settings, engine, counting=counting)
        else:
            report = await from_responses(engine, where)
    except NotEmpty as exc:
        print(f"nps {counting.service} rebuild --replay: {exc}")
        return 2
    finally:
        await engine.dispose()
    print(report.describe())
    return 1 if report.differences else 0
