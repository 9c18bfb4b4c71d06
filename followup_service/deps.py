"""Query parameters several of follow-up's APIs share: a window of days and a segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query

WindowDays = Annotated[str, Query(pattern=r"^[1-9][0-9]{0,3}d$", description="the last N days, e.g. 30d")]


SegmentFilter = Annotated[
    str,
    Query(pattern=r"^(all|(channel|survey_id):[A-Za-z0-9._:-]{1,128})$", description="all, channel:X or survey_id:X"),
]


def time_and_segment(window: str, segment: str) -> tuple[datetime, str | None, str | None]:
    """(since, channel, survey_id) for a validated window and segment."""
    dimension, _, value = segment.partition(":")
    since = datetime.now(UTC) - timedelta(days=int(window[:-1]))
    return since, value if dimension == "channel" else None, value if dimension == "survey_id" else None
