"""The themes process's periodic step: each theme's mentions over the metric window (segment
`all`) into Prometheus gauges, for the customer-experience dashboard's top themes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.nps import Counts
from shared.segments import OVERALL
from shared.windows import utc_day, window
from themes_service import metrics
from themes_service.repository import theme_sums
from themes_service.taxonomy import COMMENTED, Taxonomy


@dataclass(frozen=True, slots=True)
class ThemeGauges:
    taxonomy: Taxonomy
    window_days: int
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection) -> None:
        days = window(utc_day(self.clock()), self.window_days)
        names = [COMMENTED, *self.taxonomy.themes]
        found = await theme_sums(conn, [f"{name}@{OVERALL}" for name in names], days)
        for category, n in found.get(f"{COMMENTED}@{OVERALL}", Counts()).by_category():
            metrics.THEME_COMMENTED.labels(category).set(n)
        for theme in self.taxonomy.themes:
            for category, n in found.get(f"{theme}@{OVERALL}", Counts()).by_category():
                metrics.THEME_MENTIONS.labels(theme, category).set(n)
