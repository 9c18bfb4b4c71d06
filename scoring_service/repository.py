"""All of scoring's SQL. Set-based: one statement per batch step, never one per event.
Never commits: the consumer loop (or the API's read transaction) owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.domain import SEPARATOR, Stored, split_segment
from shared.consumer import RetryBatch
from shared.db import UNIQUE_VIOLATION, copy_rows, sqlstate_of
from shared.nps import Counts
from shared.privacy import Erasures
from shared.windows import DayRange

SCHEMA = "scoring"

_COLUMNS = "response_id, respondent_key, version, first_at, erased, score, day, segments"
_COLUMN_NAMES = tuple(_COLUMNS.split(", "))

# One row per response, as parallel arrays (one round trip for the whole batch).
_UNNEST = """
    unnest(
        CAST(:ids AS text[]), CAST(:keys AS text[]), CAST(:versions AS integer[]),
        CAST(:firsts AS timestamptz[]), CAST(:erased AS boolean[]), CAST(:scores AS smallint[]),
        CAST(:days AS date[]), CAST(:segments AS text[])
    ) AS n(ids, keys, versions, firsts, erased, scores, days, segs)
"""


# A response's segments are stored as one string joined by SEPARATOR (migration scoring_0007): the
# rule is here only. A segment is never empty and never holds the separator (domain.py).
def joined(segments: Sequence[str]) -> str:
    return SEPARATOR.join(segments)


def split(stored: str) -> tuple[str, ...]:
    return tuple(stored.split(SEPARATOR)) if stored else ()


def split_in_sql(column: str) -> str:
    """`split` in PostgreSQL: the column's segments as a text[]."""
    return f"string_to_array({column}, chr({ord(SEPARATOR)}))"


@dataclass(frozen=True, slots=True)
class Store:
    """Where a consumer of the responses topic keeps each response's state and the daily counts it
    sums to: scoring's own (`responses`, `daily_counts`), or the themes consumer's (`theme_responses`,
    `theme_daily`, whose segment keys are `<theme>@<segment>`). The same statements, so both follow
    the same exactness rule the same way."""

    schema: str
    responses: str
    daily: str
    comments: str | None  # the kept comments of the responses (themes), pruned with them
    erasures: Erasures  # <schema>.erasures: requests remembered for late events
    lock: sa.TextClause
    update: sa.TextClause
    upsert_daily: sa.TextClause


def store(schema: str, responses: str, daily: str, comments: str | None = None) -> Store:
    """A Store's statements for these tables of `schema` (each also has `segments`, the catalog of
    the segments it counts, and `erasures`)."""
    return Store(
        schema,
        responses,
        daily,
        comments,
        Erasures(schema),
        lock=sa.text(
            f"""
            SELECT {_COLUMNS} FROM {schema}.{responses}
            WHERE response_id = ANY(CAST(:ids AS text[])) OR respondent_key = ANY(CAST(:erased AS text[]))
            ORDER BY response_id
            FOR UPDATE
            """
        ),
        update=sa.text(
            f"""
            UPDATE {schema}.{responses} AS r SET
                version = n.versions, first_at = n.firsts, erased = n.erased, score = n.scores, day = n.days,
                segments = n.segs
            FROM {_UNNEST}
            WHERE r.response_id = n.ids
            """
        ),
        upsert_daily=sa.text(
            f"""
            INSERT INTO {schema}.{daily} AS d (segment, day, promoters, passives, detractors)
            SELECT * FROM unnest(
                CAST(:segments AS text[]), CAST(:days AS date[]),
                CAST(:promoters AS integer[]), CAST(:passives AS integer[]), CAST(:detractors AS integer[]))
            ON CONFLICT (segment, day) DO UPDATE SET
                promoters = d.promoters + EXCLUDED.promoters,
                passives = d.passives + EXCLUDED.passives,
                detractors = d.detractors + EXCLUDED.detractors
            """
        ),
    )


SCORES = store(SCHEMA, "responses", "daily_counts")

_SUM_RANGE = sa.text(
    f"""
    SELECT coalesce(sum(promoters), 0) AS p, coalesce(sum(passives), 0) AS pa,
           coalesce(sum(detractors), 0) AS d
    FROM {SCHEMA}.daily_counts
    WHERE segment = :segment AND day BETWEEN :first AND :last
    """
)

_DAYS = sa.text(
    f"""
    SELECT day, promoters AS p, passives AS pa, detractors AS d FROM {SCHEMA}.daily_counts
    WHERE segment = :segment AND day BETWEEN :first AND :last
    """
)

_BREAKDOWN = sa.text(
    f"""
    SELECT s.value, coalesce(sum(c.promoters), 0) AS p, coalesce(sum(c.passives), 0) AS pa,
           coalesce(sum(c.detractors), 0) AS d
    FROM {SCHEMA}.segments s
    JOIN {SCHEMA}.daily_counts c ON c.segment = s.segment AND c.day BETWEEN :first AND :last
    WHERE s.dimension = :dimension
    GROUP BY s.value
    HAVING sum(c.promoters + c.passives + c.detractors) > 0
    """
)

_DAYS_OF = sa.text(
    f"""
    SELECT segment, day, promoters, passives, detractors FROM {SCHEMA}.daily_counts
    WHERE segment = ANY(CAST(:segments AS text[])) AND day BETWEEN :first AND :last
      AND promoters + passives + detractors > 0
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


async def lock_responses(
    conn: AsyncConnection, ids: Iterable[str], erased_keys: Iterable[str], where: Store = SCORES
) -> dict[str, Stored]:
    """The stored rows of these response ids and of these respondents, locked for the batch."""
    rows = await conn.execute(where.lock, {"ids": sorted(set(ids)), "erased": sorted(set(erased_keys))})
    return {
        r.response_id: Stored(
            r.response_id,
            r.respondent_key,
            r.version,
            r.first_at,
            r.erased,
            r.score,
            r.day,
            split(r.segments),
        )
        for r in rows
    }


async def insert_responses(conn: AsyncConnection, rows: Sequence[Stored], where: Store = SCORES) -> None:
    """Rows that did not exist when the batch read them, by a binary COPY straight into the table.
    If one exists now, another transaction wrote it meanwhile (two consumers on one partition
    during a rebalance; the COPY waited for it to commit) and this batch's deltas are stale: the
    unique violation becomes RetryBatch, which rolls the batch back to be applied again on top of
    the other's state. Straight in, a batch of 10,000 takes ~40% less time in PostgreSQL than
    through a staging table and `ON CONFLICT DO NOTHING` (scripted, 10,000-row COPYs into a
    growing table: 73-107 ms staged against 45-67 ms)."""
    if not rows:
        return
    values = [
        (r.response_id, r.respondent_key, r.version, r.first_at, r.erased, r.score, r.day, joined(r.segments))
        for r in rows
    ]
    try:
        await copy_rows(conn, f"{where.schema}.{where.responses}", _COLUMN_NAMES, values)
    except sa.exc.IntegrityError as exc:
        if sqlstate_of(exc) == UNIQUE_VIOLATION:
            raise RetryBatch("a response was written by a concurrent transaction") from exc
        raise


async def update_responses(conn: AsyncConnection, rows: Sequence[Stored], where: Store = SCORES) -> None:
    """Rows the batch read (and locked) before changing them."""
    if not rows:
        return
    await conn.execute(where.update, _response_params(rows))


def _response_params(rows: Sequence[Stored]) -> dict[str, list[Any]]:
    return {
        "ids": [r.response_id for r in rows],
        "keys": [r.respondent_key for r in rows],
        "versions": [r.version for r in rows],
        "firsts": [r.first_at for r in rows],
        "erased": [r.erased for r in rows],
        "scores": [r.score for r in rows],
        "days": [r.day for r in rows],
        "segments": [joined(r.segments) for r in rows],
    }


async def known_segments(
    conn: AsyncConnection, candidates: Iterable[tuple[str, str]], schema: str = SCHEMA
) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """Which of these (dimension, value) pairs are catalogued (in `schema`'s catalog), and how many
    values each of their dimensions has (for the cardinality cap)."""
    pairs = sorted(set(candidates))
    if not pairs:
        return set(), {}
    known = await conn.execute(
        sa.text(
            f"""
            SELECT s.dimension, s.value FROM {schema}.segments s
            JOIN unnest(CAST(:dims AS text[]), CAST(:vals AS text[])) AS c(d, v) ON s.dimension = c.d AND s.value = c.v
            """
        ),
        {"dims": [d for d, _ in pairs], "vals": [v for _, v in pairs]},
    )
    found = {(r.dimension, r.value) for r in known}
    dims = sorted({d for d, v in pairs if (d, v) not in found})
    counts: dict[str, int] = {}
    if dims:
        rows = await conn.execute(
            sa.text(
                f"SELECT dimension, count(*) AS n FROM {schema}.segments WHERE dimension = ANY(:dims) GROUP BY dimension"
            ),
            {"dims": dims},
        )
        counts = {r.dimension: int(r.n) for r in rows}
    return found, counts


async def catalog_segments(conn: AsyncConnection, segments: Iterable[str], schema: str = SCHEMA) -> None:
    keys = sorted({s for s in segments if s != "all"})
    if not keys:
        return
    split = [split_segment(k) for k in keys]
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {schema}.segments (segment, dimension, value)
            SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:dims AS text[]), CAST(:vals AS text[]))
            ON CONFLICT DO NOTHING
            """
        ),
        {"keys": keys, "dims": [d for d, _ in split], "vals": [v for _, v in split]},
    )


async def add_daily(conn: AsyncConnection, deltas: Mapping[tuple[str, date], Counts], where: Store = SCORES) -> None:
    if not deltas:
        return
    # Sorted, so two writers touching the same rows lock them in the same order (no deadlock).
    keys = sorted(deltas)
    await conn.execute(
        where.upsert_daily,
        {
            "segments": [segment for segment, _ in keys],
            "days": [day for _, day in keys],
            "promoters": [deltas[k].promoters for k in keys],
            "passives": [deltas[k].passives for k in keys],
            "detractors": [deltas[k].detractors for k in keys],
        },
    )


async def mark_changed(conn: AsyncConnection, segments: Iterable[str], table: str = "segment_state") -> None:
    """`table`: segment_state (the counts moved), or rate_state (the response rates moved)."""
    keys = sorted(set(segments))
    if not keys:
        return
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.{table} AS s (segment, pending)
            SELECT unnest(CAST(:keys AS text[])), true
            ON CONFLICT (segment) DO UPDATE SET pending = true WHERE NOT s.pending
            """
        ),
        {"keys": keys},
    )


async def claim_due(conn: AsyncConnection, now: datetime, min_interval_s: float, limit: int = 5_000) -> list[str]:
    """Changed segments (counts or response rates) whose last ScoreChanged for that change is at
    least `min_interval_s` old; marks them published."""
    claimed: set[str] = set()
    for table in ("segment_state", "rate_state"):
        rows = await conn.execute(
            sa.text(
                f"""
                UPDATE {SCHEMA}.{table} SET pending = false, published_at = :now
                WHERE segment IN (
                    SELECT segment FROM {SCHEMA}.{table}
                    WHERE pending AND (published_at IS NULL OR published_at <= :cutoff)
                    ORDER BY segment LIMIT :limit FOR UPDATE SKIP LOCKED)
                RETURNING segment
                """
            ),
            {"now": now, "cutoff": now - timedelta(seconds=min_interval_s), "limit": limit},
        )
        claimed.update(r.segment for r in rows)
    return sorted(claimed)


async def counts_in(conn: AsyncConnection, segment: str, days: DayRange) -> Counts:
    row = (await conn.execute(_SUM_RANGE, {"segment": segment, "first": days.first, "last": days.last})).one()
    return Counts(int(row.p), int(row.pa), int(row.d))


async def daily(conn: AsyncConnection, segment: str, days: DayRange) -> dict[date, Counts]:
    rows = await conn.execute(_DAYS, {"segment": segment, "first": days.first, "last": days.last})
    return {r.day: Counts(int(r.p), int(r.pa), int(r.d)) for r in rows}


async def breakdown(conn: AsyncConnection, dimension: str, days: DayRange) -> dict[str, Counts]:
    rows = await conn.execute(_BREAKDOWN, {"dimension": dimension, "first": days.first, "last": days.last})
    return {r.value: Counts(int(r.p), int(r.pa), int(r.d)) for r in rows}


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


async def days_of(conn: AsyncConnection, segments: Sequence[str], days: DayRange) -> dict[str, dict[date, Counts]]:
    """Each segment's non-zero days in the range (a segment with none maps to {})."""
    rows = await conn.execute(_DAYS_OF, {"segments": list(segments), "first": days.first, "last": days.last})
    found: dict[str, dict[date, Counts]] = {s: {} for s in segments}
    for r in rows:
        found[r.segment][r.day] = Counts(r.promoters, r.passives, r.detractors)
    return found


@dataclass(frozen=True, slots=True)
class Pruned:
    responses: int
    daily: int
    comments: int


async def prune_before(conn: AsyncConnection, cutoff: date, where: Store, limit: int) -> Pruned:
    """One step of pruning what was answered before `cutoff`: up to `limit` responses (and their kept
    comments); once none is left, up to `limit` daily rows. Call again until it deletes nothing.

    Responses go first: until the last of a day's responses is gone its daily rows stay, so an
    erasure meanwhile still subtracts from a row that exists (never a negative row). The handlers
    ignore versions before the cutoff, so nothing deleted comes back, and once done the counts kept
    equal a recompute from the responses kept."""
    ids = list(
        (
            await conn.execute(
                sa.text(f"SELECT response_id FROM {where.schema}.{where.responses} WHERE day < :cutoff LIMIT :limit"),
                {"cutoff": cutoff, "limit": limit},
            )
        ).scalars()
    )
    if ids:
        await conn.execute(
            sa.text(f"DELETE FROM {where.schema}.{where.responses} WHERE response_id = ANY(CAST(:ids AS text[]))"),
            {"ids": ids},
        )
        comments = 0
        if where.comments is not None:
            gone = await conn.execute(
                sa.text(f"DELETE FROM {where.schema}.{where.comments} WHERE response_id = ANY(CAST(:ids AS text[]))"),
                {"ids": ids},
            )
            comments = gone.rowcount
        return Pruned(len(ids), 0, comments)
    daily = await conn.execute(
        sa.text(
            f"""DELETE FROM {where.schema}.{where.daily} WHERE (segment, day) IN
                (SELECT segment, day FROM {where.schema}.{where.daily} WHERE day < :cutoff LIMIT :limit)"""
        ),
        {"cutoff": cutoff, "limit": limit},
    )
    return Pruned(0, daily.rowcount, 0)


async def count_before(conn: AsyncConnection, cutoff: date, where: Store) -> Pruned:
    """What `prune_before` would delete in all (a dry run)."""
    responses = await conn.scalar(
        sa.text(f"SELECT count(*) FROM {where.schema}.{where.responses} WHERE day < :cutoff"), {"cutoff": cutoff}
    )
    daily = await conn.scalar(
        sa.text(f"SELECT count(*) FROM {where.schema}.{where.daily} WHERE day < :cutoff"), {"cutoff": cutoff}
    )
    comments = 0
    if where.comments is not None:
        comments = await conn.scalar(
            sa.text(
                f"""SELECT count(*) FROM {where.schema}.{where.comments} c JOIN {where.schema}.{where.responses} r
                    USING (response_id) WHERE r.day < :cutoff"""
            ),
            {"cutoff": cutoff},
        )
    return Pruned(int(responses or 0), int(daily or 0), int(comments or 0))


def recomputed(where: Store = SCORES) -> str:
    """The daily counts from scratch, from the stored responses (what a rebuild writes, what --check
    compares). Promoter 9-10, passive 7-8, detractor 0-6: shared/nps.py's classify, in SQL."""
    return f"""
        SELECT segment, day,
               count(*) FILTER (WHERE score >= 9) AS promoters,
               count(*) FILTER (WHERE score BETWEEN 7 AND 8) AS passives,
               count(*) FILTER (WHERE score <= 6) AS detractors
        FROM {where.schema}.{where.responses}, unnest({split_in_sql("segments")}) AS segment
        WHERE NOT erased
        GROUP BY segment, day
    """


async def rebuild_daily(conn: AsyncConnection, where: Store = SCORES) -> int:
    """Recompute every daily count from the stored responses, in one statement; scoring's also marks
    every segment changed so its ScoreChanged goes out again. Returns the number of daily counts."""
    await conn.execute(sa.text(f"LOCK TABLE {where.schema}.{where.daily} IN EXCLUSIVE MODE"))
    await conn.execute(sa.text(f"DELETE FROM {where.schema}.{where.daily}"))
    inserted = await conn.execute(
        sa.text(
            f"INSERT INTO {where.schema}.{where.daily} (segment, day, promoters, passives, detractors) {recomputed(where)}"
        )
    )
    if where is SCORES:
        await mark_all_changed(conn)
    return int(inserted.rowcount)


async def mark_all_changed(conn: AsyncConnection) -> None:
    """Every segment's ScoreChanged goes out again (after a rebuild)."""
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.segment_state (segment, pending)
            SELECT DISTINCT segment, true FROM {SCHEMA}.daily_counts
            ON CONFLICT (segment) DO UPDATE SET pending = true
            """
        )
    )


async def all_daily(conn: AsyncConnection) -> dict[tuple[str, date], Counts]:
    """Every non-zero daily count (tests and `nps scoring rebuild --check` compare these)."""
    rows = await conn.execute(
        sa.text(f"SELECT segment, day, promoters, passives, detractors FROM {SCHEMA}.daily_counts")
    )
    out = {(r.segment, r.day): Counts(r.promoters, r.passives, r.detractors) for r in rows}
    return {k: c for k, c in out.items() if c != Counts()}


async def differences(conn: AsyncConnection, where: Store = SCORES) -> int:
    """How many daily counts differ from a recompute from the stored responses (both ways)."""
    query = f"""
        WITH recomputed AS ({recomputed(where)}), live AS (
            SELECT segment, day, promoters, passives, detractors FROM {where.schema}.{where.daily}
            WHERE promoters + passives + detractors > 0
        )
        SELECT count(*) FROM ((SELECT * FROM recomputed EXCEPT SELECT * FROM live)
                              UNION ALL (SELECT * FROM live EXCEPT SELECT * FROM recomputed)) AS d
    """
    return int((await conn.execute(sa.text(query))).scalar_one())


async def count_rows(conn: AsyncConnection, where: Store, table: str) -> int:
    """Rows in one of the store's tables (`where.responses`, `where.daily`): names of ours only."""
    if table not in (where.responses, where.daily, where.comments):
        raise ValueError(f"not one of the store's tables: {table!r}")
    return int((await conn.execute(sa.text(f"SELECT count(*) FROM {where.schema}.{table}"))).scalar_one())
