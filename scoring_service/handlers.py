"""Scoring use cases: count a batch of responses; answer score queries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service import metrics, publisher, repository
from scoring_service.domain import ScoredResponse, daily_deltas, first_occurrences
from shared import outbox
from shared.consumer import Message
from shared.events import ResponseEvent, ResponseSubmitted
from shared.nps import Counts
from shared.windows import DayRange, preceding, utc_day, window


def to_scored(event: ResponseSubmitted) -> ScoredResponse:
    return ScoredResponse(
        response_id=event.response_id,
        respondent_id=event.respondent_id,
        score=event.score,
        day=utc_day(event.answered_at),
        channel=event.channel,
        survey_id=event.survey_id,
        attributes=event.attributes,
    )


@dataclass(frozen=True, slots=True)
class CountResponses:
    """The batch handler of the responses topic."""

    scores_topic: str
    current_days: int
    baseline_days: int
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ResponseEvent]]) -> None:
        now = self.clock()
        today = utc_day(now)
        submitted = [m.event for m in batch if isinstance(m.event, ResponseSubmitted)]
        # Revisions and erasures are decoded but not yet applied to the aggregates (tracked by
        # the scoring issue); they are counted so the gap is visible, not silent.
        metrics.NOT_YET_APPLIED.inc(len(batch) - len(submitted))
        responses = first_occurrences(to_scored(e) for e in submitted)
        new_ids = await repository.insert_new(conn, responses)
        new = [r for r in responses if r.response_id in new_ids]
        deltas = daily_deltas(new)
        await repository.add_daily(conn, deltas)

        touched = sorted({segment for segment, _ in deltas})
        current = window(today, self.current_days)
        baseline = preceding(current, self.baseline_days)
        snapshot = await repository.current_and_baseline(conn, touched, current, baseline)
        await outbox.enqueue(
            conn,
            repository.SCHEMA,
            [
                publisher.score_changed(self.scores_topic, segment, today, (current, cur), (baseline, base), now)
                for segment, (cur, base) in snapshot.items()
            ],
        )

        metrics.RESPONSES_COUNTED.inc(len(new))
        metrics.DUPLICATES_DROPPED.inc(len(submitted) - len(new))
        metrics.LATE_RESPONSES.inc(sum(1 for r in new if r.day < today))
        metrics.SCORE_EVENTS.inc(len(snapshot))


@dataclass(frozen=True, slots=True)
class Score:
    segment: str
    days: DayRange
    counts: Counts


async def score(conn: AsyncConnection, segment: str, window_days: int, today: date) -> Score:
    days = window(today, window_days)
    return Score(segment=segment, days=days, counts=await repository.counts_in(conn, segment, days))
