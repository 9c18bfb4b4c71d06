"""Themes' counting: each response under its comment's themes per segment (and under `_all` and
`_commented`), by scoring's exactness rule and statements (scoring_service.handlers.CountResponses),
and the comments kept for `nps themes suggest`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service.domain import Outcome, Stored, Version, newest
from scoring_service.repository import Store, catalog_segments
from themes_service.repository import THEMES, keep_comments
from themes_service.taxonomy import ALL, Taxonomy, theme_keys

EVERY = f"{ALL}@"  # every response counts under `_all@<segment>` for each of its segments


@dataclass(frozen=True, slots=True)
class ThemeCounts:
    """The themes consumer's Counting: it catalogues the segments it counts in its own schema (for
    the same cardinality cap as scoring's) and keeps the comments; it publishes no ScoreChanged."""

    taxonomy: Taxonomy
    service: str = "themes"
    store: Store = THEMES

    def keys(self, version: Version, segments: tuple[str, ...]) -> tuple[str, ...]:
        comment = version.comment
        return theme_keys(segments, self.taxonomy.tag(comment), bool(comment and comment.strip()))

    async def finish(self, conn: AsyncConnection, outcome: Outcome, versions: Sequence[Version]) -> None:
        segments = {key[len(EVERY) :] for row in outcome.rows for key in row.segments if key.startswith(EVERY)}
        await catalog_segments(conn, segments, self.store.schema)
        await keep_comments(conn, current_comments(outcome.rows, versions), self.store)


def current_comments(rows: Sequence[Stored], versions: Sequence[Version]) -> dict[str, str | None]:
    """For each changed row, the comment its state now holds: its new version's (stripped), or None
    when it is erased or that version has none. A row that only changed its first moment is left out."""
    best = newest(versions)
    found: dict[str, str | None] = {}
    for row in rows:
        incoming = best.get(row.response_id)
        if row.erased:
            found[row.response_id] = None
        elif incoming is not None and incoming.version == row.version and incoming.respondent_key == row.respondent_key:
            found[row.response_id] = (incoming.comment or "").strip() or None
    return found
