"""Scoring use cases: apply a batch of response events; publish what changed; answer queries."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service import metrics, publisher, repository
from scoring_service.domain import (
    BreakdownSort,
    Dimensions,
    Outcome,
    SegmentPlan,
    Version,
    apply,
    candidate_values,
    ordered,
    segments_of,
)
from scoring_service.rates import repository as rates_repository
from scoring_service.rates.domain import FATIGUE_DAYS, summed
from shared import outbox, windows
from shared.consumer import Message
from shared.nps import Comparison, Counts, ci95, compare
from shared.pseudonyms import Pseudonyms
from shared.windows import DayRange, Interval, preceding, retention_cutoff, utc_day, window
from shared.wire import Erased, Response, ResponseWire, Revised


def version_of(event: Response, pseudonyms: Pseudonyms) -> Version:
    if isinstance(event, Revised):
        number, at = event.version, event.revised_at
    else:
        number, at = 1, event.submitted_at
    return Version(
        response_id=event.response_id,
        respondent_key=pseudonyms.key(event.respondent_id),
        version=number,
        score=event.score,
        day=utc_day(event.answered_at),
        channel=event.channel,
        survey_id=event.survey_id,
        attributes=event.attributes,
        at=at,
        comment=event.comment,
    )


class Counting(Protocol):
    """What a consumer of the responses topic counts, under the one exactness rule (domain.apply):
    where its rows go (a Store: responses, daily counts, the segment catalog and erasures of its
    service's schema), under which keys a response counts (from the response and its segments),
    and its own last step of a batch. Scoring's is `Scores`; themes' (themes_service) counts each
    response under its comment's themes per segment."""

    @property
    def service(self) -> str: ...

    @property
    def store(self) -> repository.Store: ...

    def keys(self, version: Version, segments: tuple[str, ...]) -> tuple[str, ...]: ...

    async def finish(self, conn: AsyncConnection, outcome: Outcome, versions: Sequence[Version]) -> None: ...


@dataclass(frozen=True, slots=True)
class Scores:
    """Scoring's counting: each response under its segments; the segments catalogued (for the
    cardinality cap and breakdowns) and marked changed, for their ScoreChanged."""

    service: str = "scoring"
    store: repository.Store = repository.SCORES

    def keys(self, version: Version, segments: tuple[str, ...]) -> tuple[str, ...]:
        return segments

    async def finish(self, conn: AsyncConnection, outcome: Outcome, versions: Sequence[Version]) -> None:
        await repository.catalog_segments(conn, {s for row in outcome.rows for s in row.segments}, self.store.schema)
        await repository.mark_changed(conn, {segment for segment, _ in outcome.deltas})


SCORING = Scores()


@dataclass(frozen=True, slots=True)
class CountResponses:
    """The batch handler of the responses topic: submissions, revisions and erasures."""

    dimensions: Dimensions
    max_values: int
    pseudonyms: Pseudonyms
    clock: Callable[[], datetime]
    counting: Counting = SCORING
    # NPS_SCORING_RETENTION_DAYS: versions answered before the cutoff are ignored (their day's counts
    # are, or will be, pruned); an erasure still reaches the rows not pruned yet.
    retention_days: int = 0

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseWire]]) -> None:
        today = utc_day(self.clock())
        cutoff = retention_cutoff(today, self.retention_days)
        versions: list[Version] = []
        expired = 0
        for message in batch:
            if not isinstance(message.event, Erased):
                version = version_of(message.event, self.pseudonyms)
                if cutoff is not None and version.day < cutoff:
                    expired += 1
                else:
                    versions.append(version)
        requested = self.pseudonyms.latest_requests(m.event for m in batch)

        where = self.counting.store
        erasures = await where.erasures.record(conn, requested)
        existing = await repository.lock_responses(conn, (v.response_id for v in versions), requested, where)
        others = {v.respondent_key for v in versions} | {r.respondent_key for r in existing.values()}
        erasures.update(await where.erasures.of(conn, others - erasures.keys()))
        candidates = candidate_values(versions, self.dimensions)
        known, per_dimension = await repository.known_segments(conn, candidates, where.schema)
        plan = SegmentPlan(known, per_dimension, self.max_values)
        keys, dimensions = self.counting.keys, self.dimensions
        outcome = apply(existing, versions, erasures, lambda v: keys(v, segments_of(v, dimensions, plan)))
        await repository.update_responses(conn, [r for r in outcome.rows if r.response_id in existing], where)
        await repository.insert_responses(conn, [r for r in outcome.rows if r.response_id not in existing], where)
        await repository.add_daily(conn, outcome.deltas, where)
        await self.counting.finish(conn, outcome, versions)

        metrics.EVENTS.labels("applied").inc(outcome.versions_applied)
        metrics.EVENTS.labels("ignored").inc(outcome.versions_ignored)
        if expired:
            metrics.EVENTS.labels("expired").inc(expired)
        metrics.EVENTS.labels("erasure").inc(sum(1 for m in batch if isinstance(m.event, Erased)))
        metrics.RESPONSES_ERASED.inc(outcome.erased)
        metrics.LATE_RESPONSES.inc(sum(1 for v in versions if v.version == 1 and v.day < today))
        metrics.SEGMENTS_CAPPED.inc(sum(1 for row in outcome.rows for s in row.segments if s.endswith(":other")))


@dataclass(frozen=True, slots=True)
class PublishChanges:
    """The loop's periodic step: one ScoreChanged per changed segment, at most one per segment per
    `interval_s`, carrying the current and the baseline window (so alerts never query scoring)."""

    scores_topic: str
    current_days: int
    baseline_days: int
    interval_s: float
    clock: Callable[[], datetime]
    daily_days: int = 84

    async def __call__(self, conn: AsyncConnection) -> None:
        now = self.clock()
        segments = await repository.claim_due(conn, now, self.interval_s)
        if not segments:
            return
        today = utc_day(now)
        current = window(today, self.current_days)
        baseline = preceding(current, self.baseline_days)
        span = DayRange(min(baseline.first, today - timedelta(days=self.daily_days - 1)), current.last)
        snapshot = await repository.days_of(conn, segments, span)
        rates = await rates_repository.spans_of(conn, segments, span)
        await outbox.enqueue(
            conn,
            repository.SCHEMA,
            [
                publisher.score_changed(
                    self.scores_topic, segment, today, current, baseline, span, days, now, rates.get(segment)
                )
                for segment, days in snapshot.items()
            ],
        )
        metrics.SCORE_EVENTS.inc(len(snapshot))


@dataclass(frozen=True, slots=True)
class SegmentGauges:
    """A periodic step: the NPS, 95% interval and responses of the configured segments over the
    metric window, into the `nps_segment_*` gauges (one query for all of them)."""

    segments: Sequence[str]
    window_days: int
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection) -> None:
        if not self.segments:
            return
        days = window(utc_day(self.clock()), self.window_days)
        counted = await repository.days_of(conn, self.segments, days)
        metrics.SEGMENT_WINDOW_DAYS.set(self.window_days)
        for segment, by_day in counted.items():
            counts = Counts.total(by_day.values())
            interval = ci95(counts)
            score = counts.nps
            metrics.SEGMENT_SCORE.labels(segment).set(math.nan if score is None else score)
            metrics.SEGMENT_SCORE_LOW.labels(segment).set(math.nan if score is None else interval.low)
            metrics.SEGMENT_SCORE_HIGH.labels(segment).set(math.nan if score is None else interval.high)
            for category, n in counts.by_category():
                metrics.SEGMENT_RESPONSES.labels(segment, category).set(n)
        await rate_gauges(conn, self.segments, days)


async def rate_gauges(conn: AsyncConnection, segments: Sequence[str], days: DayRange) -> None:
    """The response rate and fatigue of the configured segments (scoring_service/rates)."""
    fatigue_days = window(days.last, FATIGUE_DAYS)
    for segment in segments:
        asked = summed(await rates_repository.days_of(conn, segment, days))
        people, twice = await rates_repository.asked_twice(conn, segment, fatigue_days)
        metrics.SEGMENT_INVITED.labels(segment).set(asked.invited)
        metrics.SEGMENT_RESPONSE_RATE.labels(segment).set(math.nan if asked.rate is None else asked.rate)
        metrics.SEGMENT_ASKED_TWICE.labels(segment).set(twice / people if people else math.nan)


# --- queries ---


@dataclass(frozen=True, slots=True)
class Score:
    segment: str
    days: DayRange
    counts: Counts


async def score(conn: AsyncConnection, segment: str, window_days: int, as_of: date) -> Score:
    days = window(as_of, window_days)
    return Score(segment=segment, days=days, counts=await repository.counts_in(conn, segment, days))


async def breakdown(
    conn: AsyncConnection, dimension: str, window_days: int, as_of: date, sort: BreakdownSort
) -> tuple[DayRange, list[tuple[str, Counts]]]:
    """Every value of a dimension with responses in the window, in `sort` order."""
    days = window(as_of, window_days)
    return days, ordered(await repository.breakdown(conn, dimension, days), sort)


async def series(
    conn: AsyncConnection, segment: str, days: DayRange, interval: Interval
) -> list[tuple[DayRange, Counts]]:
    """The segment's counts per calendar bucket (every bucket of `days`, empty ones too)."""
    return windows.series(await repository.daily(conn, segment, days), days, interval)


@dataclass(frozen=True, slots=True)
class Compared:
    current: Score
    baseline: Score
    comparison: Comparison


async def compare_windows(
    conn: AsyncConnection, segment: str, current_days: int, baseline_days: int, as_of: date
) -> Compared:
    current = window(as_of, current_days)
    baseline = preceding(current, baseline_days)
    counts = await repository.current_and_baseline(conn, [segment], current, baseline)
    cur, base = counts[segment]
    return Compared(Score(segment, current, cur), Score(segment, baseline, base), compare(base, cur))
