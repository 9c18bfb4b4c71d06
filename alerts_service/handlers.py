"""Alerts use cases: mirror each segment's daily counts from ScoreChanged (the consumer's batches),
and evaluate every segment in rounds (the loop's tick): every `interval_s`, and within a tick of
a batch that changed something."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from alerts_service import metrics, publisher, repository
from alerts_service.detection import DropTest, Ewma, Rules, drop_test, ewma_of, rate_test
from alerts_service.domain import (
    Change,
    RuleState,
    SegmentData,
    Timing,
    Transition,
    Windows,
    evaluate_round,
    round_windows,
)
from alerts_service.drivers import Drivers, describe
from alerts_service.repository import NO_DAYS, NO_RATES, Days, Opened, RateDays, Seen, Silence
from shared import audit, outbox
from shared.consumer import Message
from shared.events import AlertExplanation, ScoreChanged, ScoreEvent
from shared.nps import NO_INVITATIONS, Counts, Rate
from shared.windows import utc_day

log = logging.getLogger(__name__)

T = TypeVar("T")

BUCKET = timedelta(minutes=5)  # arrivals are kept per segment per 5 minutes (the incident rule's grain)
ARRIVALS_KEPT = timedelta(days=2)
DAYS_KEPT_EXTRA = 7  # days beyond the longest span any rule reads


def bucket_of(moment: datetime) -> datetime:
    seconds = BUCKET.total_seconds()
    return datetime.fromtimestamp(moment.timestamp() // seconds * seconds, moment.tzinfo)


@dataclass
class Due:
    """Shared between the consumer's handler and the round: a batch that changed a segment asks
    for a round at the next tick."""

    now: bool = True


@dataclass(frozen=True, slots=True)
class MirrorScores:
    due: Due

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ScoreEvent]]) -> None:
        latest: dict[str, ScoreChanged] = {}  # only a segment's newest score in the batch matters
        for message in batch:
            event = message.event
            prior = latest.get(event.segment)
            if prior is None or event.computed_at > prior.computed_at:
                latest[event.segment] = event
        metrics.SCORES.labels("superseded").inc(len(batch) - len(latest))
        known = await repository.lock_segments(conn, list(latest))
        fresh = {
            s: e for s, e in latest.items() if s not in known or e.computed_at > known[s].last_computed_at
        }  # older than what was judged: a redelivery, or overtaken
        metrics.SCORES.labels("stale").inc(len(latest) - len(fresh))
        with_days = {s: e for s, e in fresh.items() if e.daily is not None}
        metrics.SCORES.labels("applied").inc(len(with_days))
        metrics.SCORES.labels("no_days").inc(len(fresh) - len(with_days))
        spans = {s: (e.daily_first_day or e.baseline.first_day, e.as_of) for s, e in with_days.items()}
        held = await repository.days_of(conn, list(with_days))  # rows of locked segments (a new one: save_days)
        kept: dict[str, Days] = {}
        arrivals: dict[tuple[str, datetime], Counts] = {}
        seen: dict[str, Seen] = {}
        for segment, event in fresh.items():
            previous = known.get(segment)
            last_arrival = previous.last_arrival_at if previous is not None else None
            if event.daily is not None:
                first, last = spans[segment]
                now = [(d.day, d.counts) for d in event.daily if first <= d.day <= last]
                days = held.get(segment, NO_DAYS)
                before = days.sum(first, last)
                kept[segment] = days.replaced(first, last, now)
                delta = Counts.total(c for _, c in now) - before
                # The first days alerts holds of a segment (new, or upgraded from v1, or back after
                # 84 quiet days) are its history, not what just arrived.
                first_sight = before.n == 0
                arrived = Counts() if first_sight else delta
                if first_sight and now:
                    last_arrival = event.computed_at
                if arrived != Counts():
                    arrivals[(segment, bucket_of(event.computed_at))] = arrived
                if arrived.promoters > 0 or arrived.passives > 0 or arrived.detractors > 0:
                    last_arrival = event.computed_at
            seen[segment] = Seen(event.computed_at, last_arrival)
        await repository.save_days(conn, kept, kept.keys() - held.keys())
        await repository.save_rate_days(
            conn,
            {
                s: (RateDays.of(spans[s][0], ((d.day, Rate(d.invited, d.responded)) for d in e.rates)), e.computed_at)
                for s, e in with_days.items()
                if e.rates is not None
            },
        )
        await repository.add_arrivals(conn, arrivals)
        await repository.save_segments(conn, seen)
        if seen:
            self.due.now = True


YIELD_EVERY = 250  # segments worked out between two turns of the event loop, in a round's reads


@dataclass(frozen=True, slots=True)
class Cached:
    """A segment's windows, drop test and EWMA as of `key` = (day, newest score judged): recomputed
    only when either moves, so a round over 10,000 quiet segments reads no days. Its days are kept:
    a new day works out the windows again from them, without a read (a segment's days change only
    with a newer score, which moves the key's second half)."""

    key: tuple[date, datetime]
    current: Counts
    baseline: Counts
    drop: DropTest | None
    ewma: Ewma | None
    days: Days
    rates: RateDays = NO_RATES
    current_rate: Rate = NO_INVITATIONS
    baseline_rate: Rate = NO_INVITATIONS
    rate: DropTest | None = None


def stats_of(days: Days, rules: Rules, today: date) -> tuple[Counts, Counts, Ewma | None]:
    """The current and baseline windows (ending today) and the EWMA over the complete days before
    today, from one segment's days held: each a slice of its arrays (a day after today, from a score
    computed on a clock ahead of this one, is in none). The EWMA's reference is the
    `reference_days` before its `monitored_days`, which end yesterday. The first round of a start
    works out 10,000 segments this way."""
    stop = (today - days.first).days + 1  # the elements up to today's

    def ending(ago: int, count: int) -> slice:  # `count` days, the newest `ago` days before today
        return slice(max(0, stop - ago - count), max(0, stop - ago))

    drop, trend = rules.drop, rules.ewma
    monitored = ending(1, trend.monitored_days)
    return (
        days.total(ending(0, drop.current_days)),
        days.total(ending(drop.current_days, drop.baseline_days)),
        ewma_of(
            days.total(ending(trend.monitored_days + 1, trend.reference_days)),
            zip(days.promoters[monitored], days.passives[monitored], days.detractors[monitored], strict=True),
            trend,
        ),
    )


async def _days_and_rates(
    conn: AsyncConnection, segments: Sequence[str]
) -> tuple[dict[str, Days], dict[str, RateDays]]:
    return await repository.days_of(conn, segments), await repository.rate_days_of(conn, segments)


def first_day_read(today: date, rules: Rules, windows: Windows) -> date:
    span = rules.ewma.reference_days + rules.ewma.monitored_days
    return min(windows.baseline.first, today - timedelta(days=span))


def silence_for(silences: Sequence[Silence], rule: str, segment: str) -> Silence | None:
    for silence in silences:
        if (silence.rule is None or silence.rule == rule) and fnmatch.fnmatchcase(segment, silence.matcher):
            return silence
    return None


def round_due(clock: float, scheduled_at: float, last: float, asked: bool, min_gap_s: float) -> bool:
    """On the schedule; or asked for by a batch, but under steady traffic not more often than every
    `min_gap_s` (10,000 segments cost ~0.16 s a round, which the consumer's batches wait for)."""
    return clock >= scheduled_at or (asked and clock >= last + min_gap_s)


@dataclass
class EvaluateRounds:
    """The loop's tick. One round at a time across replicas (a transaction-scoped advisory lock);
    the round's transitions, alert rows and outbox events commit together."""

    rules: Rules
    timing: Timing
    alerts_topic: str
    interval_s: float
    clock: Callable[[], datetime]
    due: Due
    min_gap_s: float = 5.0
    chunk: int = 2_000  # segments whose days are read per query
    last_round_at: datetime | None = None  # the clock's time at the last round evaluated
    _next: float = 0.0
    _last: float = -1e9
    _cache: dict[str, Cached] = field(default_factory=dict)
    _windows: tuple[date, Windows] | None = None
    _next_prune: float = 0.0
    # A fired drop alert's drivers, from the themes service (alerts_service/drivers.py); None: off.
    drivers: Drivers | None = None
    max_driver_requests: int = 20  # per round: a round that fires more attaches drivers to the first ones

    async def __call__(self, conn: AsyncConnection) -> None:
        clock = time.monotonic()
        if not round_due(clock, self._next, self._last, self.due.now, self.min_gap_s):
            return
        if not await repository.try_round_lock(conn):
            return  # another replica is evaluating
        self.due.now = False
        self._next = clock + self.interval_s
        self._last = clock
        started = time.perf_counter()
        now = self.clock()
        await self.evaluate(conn, now)
        metrics.ROUND_SECONDS.observe(time.perf_counter() - started)
        self.last_round_at = now
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + 3600
            today = utc_day(now)
            oldest = first_day_read(today, self.rules, round_windows(today, self.rules))
            await repository.prune(conn, now - ARRIVALS_KEPT, oldest - timedelta(days=DAYS_KEPT_EXTRA))

    async def evaluate(self, conn: AsyncConnection, now: datetime) -> None:
        today = utc_day(now)
        windows = round_windows(today, self.rules)
        segments = await repository.all_segments(conn)
        since = now - timedelta(minutes=self.rules.incident.minutes)

        async def the_rest() -> tuple[dict[str, Counts], dict[tuple[str, str], RuleState]]:
            return await repository.recent_arrivals(conn, since), await repository.rule_states(conn, now)

        recent, states = await self._refresh(conn, segments, today, the_rest)
        data = []
        for segment in sorted(segments):
            cached = self._cache[segment]
            data.append(
                SegmentData(
                    segment,
                    cached.current,
                    cached.baseline,
                    cached.drop,
                    cached.ewma,
                    recent.get(segment, Counts()),
                    segments[segment].last_arrival_at,
                    cached.current_rate,
                    cached.baseline_rate,
                    cached.rate,
                )
            )
        result = evaluate_round(data, states, self.rules, windows, now, self.timing)
        await repository.save_rule_states(conn, result.states)
        metrics.SEGMENTS_EVALUATED.set(len(data))
        metrics.VERDICTS.inc(result.verdicts)
        for rule, count in result.firing.items():
            metrics.FIRING.labels(rule).set(count)
        if result.changes:
            await self._publish(conn, result.changes, now)

    async def _refresh(
        self,
        conn: AsyncConnection,
        segments: Mapping[str, Seen],
        today: date,
        then: Callable[[], Awaitable[T]],
    ) -> T:
        """The cache brought up to date for this round; returns what `then` reads (the round's other
        reads), sent while the last part read is worked out, when the database has nothing else to do."""
        for gone in self._cache.keys() - segments.keys():
            del self._cache[gone]
        stale: list[str] = []  # a newer score (or not seen yet): its days are read again
        moved: list[tuple[str, Cached]] = []  # only the day moved: its days kept are worked out again
        for segment, seen in segments.items():
            cached = self._cache.get(segment)
            if cached is None or cached.key[1] != seen.last_computed_at:
                stale.append(segment)
            elif cached.key[0] != today:
                moved.append((segment, cached))
        for done, (segment, cached) in enumerate(moved):
            if done % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            self._keep(segment, cached.key[1], cached.days, cached.rates, today)
        return await self._read(conn, sorted(stale), segments, today, then)

    def _parts(self, stale: Sequence[str]) -> list[Sequence[str]]:
        """`chunk` segments a read, the last read split so that its own part is small: after the
        last read nothing overlaps the work on its part but `then`'s reads."""
        parts = [stale[i : i + self.chunk] for i in range(0, len(stale), self.chunk)]
        tail = self.chunk // 4
        if tail and len(stale) > self.chunk and len(parts[-1]) > tail:
            last = parts.pop()
            parts += [last[:-tail], last[-tail:]]
        return parts

    async def _read(
        self,
        conn: AsyncConnection,
        stale: Sequence[str],
        segments: Mapping[str, Seen],
        today: date,
        then: Callable[[], Awaitable[T]],
    ) -> T:
        parts = self._parts(stale)
        if not parts:
            return await then()
        # Each part's days are read while the part before is worked out: PostgreSQL reads and
        # sends on its core as this one computes (the first round of a start reads every segment).
        # After the last part's read, `then`'s reads go out while that part is worked out.
        reading = asyncio.ensure_future(_days_and_rates(conn, parts[0]))
        following: asyncio.Future[T] | None = None
        try:
            for index, part in enumerate(parts):
                found, rates = await reading
                if index + 1 < len(parts):
                    reading = asyncio.ensure_future(_days_and_rates(conn, parts[index + 1]))
                else:
                    following = asyncio.ensure_future(then())
                for done, segment in enumerate(part):
                    if done % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # lets the next part's query go out and be answered
                    self._keep(
                        segment,
                        segments[segment].last_computed_at,
                        found.get(segment, NO_DAYS),
                        rates.get(segment, NO_RATES),
                        today,
                    )
            assert following is not None
            return await following
        finally:
            # A part's work failed: the reads still out must not outlive the transaction.
            for pending in (reading, following):
                if pending is not None and not pending.done():
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)

    def _windows_of(self, today: date) -> Windows:
        """The round's windows, worked out once a day (not once per segment kept)."""
        if self._windows is None or self._windows[0] != today:
            self._windows = (today, round_windows(today, self.rules))
        return self._windows[1]

    def _keep(self, segment: str, computed_at: datetime, days: Days, rates: RateDays, today: date) -> None:
        current, baseline, trend = stats_of(days, self.rules, today)
        test = drop_test(current, baseline, self.rules.drop)
        windows = self._windows_of(today)
        assert windows.rates_current is not None and windows.rates_baseline is not None
        now_rate = rates.sum(windows.rates_current.first, windows.rates_current.last)
        before_rate = rates.sum(windows.rates_baseline.first, windows.rates_baseline.last)
        self._cache[segment] = Cached(
            (today, computed_at),
            current,
            baseline,
            test,
            trend,
            days,
            rates,
            now_rate,
            before_rate,
            rate_test(now_rate, before_rate, self.rules.drop) if self.rules.response_rate.enabled else None,
        )

    async def _with_drivers(self, changes: Sequence[Change], now: datetime) -> dict[int, AlertExplanation]:
        """The explanations of fired drop alerts, with the themes that drive them (by change index)."""
        fired = [i for i, c in enumerate(changes) if c.transition is Transition.FIRED and c.state.rule == "drop"]
        if not fired:
            return {}
        if self.drivers is None:
            metrics.DRIVERS.labels("off").inc(len(fired))
            return {}
        asked = fired[: self.max_driver_requests]
        drop = self.rules.drop
        found = await asyncio.gather(
            *(
                self.drivers(changes[i].state.segment, drop.current_days, drop.baseline_days, utc_day(now))
                for i in asked
            )
        )
        out = {}
        for i, drivers in zip(asked, found, strict=True):
            if drivers:
                x = changes[i].explanation
                out[i] = x.model_copy(update={"drivers": drivers, "summary": f"{x.summary}; {describe(drivers)}"})
        return out

    async def _publish(self, conn: AsyncConnection, changes: Sequence[Change], now: datetime) -> None:
        silences = await repository.active_silences(conn, now)
        explained = await self._with_drivers(changes, now)
        opened: list[Opened] = []
        resolved: list[tuple[str, datetime, AlertExplanation]] = []
        outgoing = []
        closing = await repository.opened(
            conn, [c.state.alert_id for c in changes if c.transition is Transition.RESOLVED and c.state.alert_id]
        )
        for index, change in enumerate(changes):
            state = change.state
            explanation = explained.get(index, change.explanation)
            assert state.alert_id is not None
            metrics.TRANSITIONS.labels(state.rule, change.transition.value).inc()
            if change.transition is Transition.FIRED:
                silence = silence_for(silences, state.rule, state.segment)
                opened.append(
                    Opened(
                        state.alert_id,
                        state.rule,
                        state.segment,
                        now,
                        explanation,
                        silence.silence_id if silence else None,
                    )
                )
                log.warning(
                    "alert fired: rule=%s segment=%s alert=%s%s: %s",
                    state.rule,
                    state.segment,
                    state.alert_id,
                    f" (silenced by {silence.silence_id})" if silence else "",
                    explanation.summary,
                )
                if silence is None:
                    outgoing.append(publisher.fired(self.alerts_topic, state, now, explanation))
                else:
                    metrics.SILENCED.inc()
            else:
                resolved.append((state.alert_id, now, change.explanation))
                log.info("alert resolved: rule=%s segment=%s alert=%s", state.rule, state.segment, state.alert_id)
                fired_at, silence_id = closing.get(state.alert_id, (now, None))
                if silence_id is None:  # its AlertFired went out, so its AlertResolved does
                    outgoing.append(publisher.resolved(self.alerts_topic, state, fired_at, now, change.explanation))
        await repository.insert_alerts(conn, opened)
        await repository.resolve_alerts(conn, resolved)
        await outbox.enqueue(conn, repository.SCHEMA, outgoing)


class AlertNotFound(Exception):
    pass


async def acknowledge(
    conn: AsyncConnection, alerts_topic: str, alert_id: str, by: str, note: str | None, actor: str, now: datetime
) -> Any:
    """Record who took the alert (again, if someone else takes it), audit it, publish AlertAcknowledged."""
    row = await repository.get_alert(conn, alert_id, lock=True)
    if row is None:
        raise AlertNotFound(alert_id)
    await repository.acknowledge(conn, alert_id, by, note, now)
    await audit.record(conn, actor, "alert.acknowledged", alert_id, {"by": by})
    await outbox.enqueue(conn, repository.SCHEMA, [publisher.acknowledged(alerts_topic, row, by, note, now)])
    metrics.ACKNOWLEDGED.inc()
    return await repository.get_alert(conn, alert_id)
