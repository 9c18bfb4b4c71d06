"""All of scoring's SQL. Set-based: one statement per batch step, never one per event.
Never commits: the consumer loop (or the API's read transaction) owns the transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.domain import ScoredResponse
from shared.nps import Counts
from shared.windows import DayRange

SCHEMA = "scoring"

_INSERT_RESPONSES = sa.text(
    f"""
    INSERT INTO {SCHEMA}.responses
        (response_id, respondent_id, score, day, channel, survey_id, attributes)
    SELECT * FROM unnest(
        CAST(:response_ids AS text[]), CAST(:respondent_ids AS text[]), CAST(:scores AS smallint[]),
        CAST(:days AS date[]), CAST(:channels AS text[]), CAST(:survey_ids AS text[]),
        CAST(:attributes AS jsonb[]))
    ON CONFLICT (response_id) DO NOTHING
    RETURNING response_id
    """
)

_UPSERT_DAILY = sa.text(
    f"""
    INSERT INTO {SCHEMA}.daily_counts AS d (segment, day, promoters, passives, detractors)
    SELECT * FROM unnest(
        CAST(:segments AS text[]), CAST(:days AS date[]),
        CAST(:promoters AS integer[]), CAST(:passives AS integer[]), CAST(:detractors AS integer[]))
    ON CONFLICT (segment, day) DO UPDATE SET
        promoters = d.promoters + EXCLUDED.promoters,
        passives = d.passives + EXCLUDED.passives,
        detractors = d.detractors + EXCLUDED.detractors
    """
)

_SUM_RANGE = sa.text(
    f"""
    SELECT coalesce(sum(promoters), 0) AS p, coalesce(sum(passives), 0) AS pa,
           coalesce(sum(detractors), 0) AS d
    FROM {SCHEMA}.daily_counts
    WHERE segment = :segment AND day BETWEEN :first AND :last
    """
)

_SUM_TWO_RANGES = sa.text(
    f"""
    SELECT segment,
        coalesce(sum(promoters) FILTER (WHERE day >= :cur_first), 0) AS cp,
        coalesce(sum(passives) FILTER (WHERE day >= :cur_first), 0) AS cpa,
        coalesce(sum(detractors) FILTER (WHERE day >= :cur_first), 0) AS cd,
        coalesce(sum(promoters) FILTER (WHERE day < :cur_first), 0) AS bp,
        coalesce(sum(passives) FILTER (WHERE day < :cur_first), 0) AS bpa,
        coalesce(sum(detractors) FILTER (WHERE day < :cur_first), 0) AS bd
    FROM {SCHEMA}.daily_counts
    WHERE segment = ANY(CAST(:segments AS text[])) AND day BETWEEN :base_first AND :cur_last
    GROUP BY segment
    """
)


async def insert_new(conn: AsyncConnection, responses: Sequence[ScoredResponse]) -> set[str]:
    """Store responses not seen before; returns the response_ids that were new."""
    if not responses:
        return set()
    result = await conn.execute(
        _INSERT_RESPONSES,
        {
            "response_ids": [r.response_id for r in responses],
            "respondent_ids": [r.respondent_id for r in responses],
            "scores": [r.score for r in responses],
            "days": [r.day for r in responses],
            "channels": [r.channel for r in responses],
            "survey_ids": [r.survey_id for r in responses],
            "attributes": [json.dumps(dict(r.attributes)) for r in responses],
        },
    )
    return {row.response_id for row in result}


async def add_daily(conn: AsyncConnection, deltas: Mapping[tuple[str, date], Counts]) -> None:
    if not deltas:
        return
    # Sorted, so two writers touching the same rows lock them in the same order (no deadlock).
    keys = sorted(deltas)
    await conn.execute(
        _UPSERT_DAILY,
        {
            "segments": [segment for segment, _ in keys],
            "days": [day for _, day in keys],
            "promoters": [deltas[k].promoters for k in keys],
            "passives": [deltas[k].passives for k in keys],
            "detractors": [deltas[k].detractors for k in keys],
        },
    )


async def counts_in(conn: AsyncConnection, segment: str, days: DayRange) -> Counts:
    row = (await conn.execute(_SUM_RANGE, {"segment": segment, "first": days.first, "last": days.last})).one()
    return Counts(int(row.p), int(row.pa), int(row.d))


async def current_and_baseline(
    conn: AsyncConnection, segments: Sequence[str], current: DayRange, baseline: DayRange
) -> dict[str, tuple[Counts, Counts]]:
    """Counts of the current and the baseline window for each segment (zeros where none)."""
    assert baseline.last < current.first
    rows = await conn.execute(
        _SUM_TWO_RANGES,
        {
            "segments": list(segments),
            "cur_first": current.first,
            "cur_last": current.last,
            "base_first": baseline.first,
        },
    )
    found = {
        row.segment: (
            Counts(int(row.cp), int(row.cpa), int(row.cd)),
            Counts(int(row.bp), int(row.bpa), int(row.bd)),
        )
        for row in rows
    }
    return {s: found.get(s, (Counts(), Counts())) for s in segments}
