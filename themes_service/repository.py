"""The themes' SQL: the theme counts (`<theme>@<segment>` keys, kept by scoring's counting
statements: scoring_service.repository.Store) and the comments kept for `nps themes suggest`.
Never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.repository import Store, split_in_sql, store
from shared.nps import Counts
from shared.windows import DayRange
from themes_service.taxonomy import ALL

SCHEMA = "themes"
# Its tables keep the names they had in scoring's schema, which held them until themes_0001.
THEMES = store(SCHEMA, "theme_responses", "theme_daily", "theme_comments")


async def keep_comments(conn: AsyncConnection, comments: Mapping[str, str | None], where: Store = THEMES) -> None:
    """The themes consumer's comments: each response's current one, or None to forget it (erased,
    revised to none)."""
    table = f"{where.schema}.{where.comments}"
    kept = sorted((rid, text) for rid, text in comments.items() if text is not None)
    dropped = sorted(rid for rid, text in comments.items() if text is None)
    if kept:
        await conn.execute(
            sa.text(
                f"""INSERT INTO {table} (response_id, comment)
                    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:comments AS text[]))
                    ON CONFLICT (response_id) DO UPDATE SET comment = EXCLUDED.comment"""
            ),
            {"ids": [r for r, _ in kept], "comments": [t for _, t in kept]},
        )
    if dropped:
        await conn.execute(
            sa.text(f"DELETE FROM {table} WHERE response_id = ANY(CAST(:ids AS text[]))"), {"ids": dropped}
        )


async def comments_in(
    conn: AsyncConnection, segment: str, days: DayRange, scores: tuple[int, int] = (0, 10)
) -> list[str]:
    """The comments the themes consumer holds for a segment's responses answered in `days` with a
    score in `scores` (both ends included), by response id."""
    rows = await conn.execute(
        sa.text(
            f"""
            SELECT c.comment FROM {SCHEMA}.{THEMES.comments} c JOIN {SCHEMA}.{THEMES.responses} r USING (response_id)
            WHERE NOT r.erased AND r.day BETWEEN :first AND :last AND r.score BETWEEN :low AND :high
              AND :key = ANY({split_in_sql("r.segments")})
            ORDER BY c.response_id
            """
        ),
        {"first": days.first, "last": days.last, "low": scores[0], "high": scores[1], "key": f"{ALL}@{segment}"},
    )
    return [r.comment for r in rows]


async def theme_sums(conn: AsyncConnection, keys: Sequence[str], days: DayRange) -> dict[str, Counts]:
    """The counts of these theme keys (`<theme>@<segment>`) over the days (absent: none)."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT segment, sum(promoters) AS p, sum(passives) AS pa, sum(detractors) AS d
                FROM {SCHEMA}.{THEMES.daily} WHERE segment = ANY(CAST(:keys AS text[]))
                AND day BETWEEN :first AND :last GROUP BY segment"""
        ),
        {"keys": list(keys), "first": days.first, "last": days.last},
    )
    return {r.segment: Counts(int(r.p), int(r.pa), int(r.d)) for r in rows}
