"""Scoring's handler through the real loop, broker and database: aggregates equal a recompute."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from scoring_service import handlers
from scoring_service.bootstrap import spec
from scoring_service.settings import ScoringSettings
from shared.db import make_engine
from shared.events import ResponseSubmitted, score_events
from shared.nps import Counts, ci95
from shared.service import ConsumerSpec
from shared.windows import preceding, window
from tests.helpers import (
    create_topics,
    eventually,
    keyed,
    produce,
    read_topic,
    running_loop,
    service_settings,
    started_producer,
    submitted_event,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
TODAY = NOW.date()


def settings_for(bootstrap: str, database_url: str, namespace: str, group: str = "nps-scoring") -> ScoringSettings:
    return service_settings(bootstrap, database_url, namespace, ScoringSettings, group_id=group)


def event(rid: str, score: int, days_ago: int = 0, channel: str | None = "web", **attributes: str) -> ResponseSubmitted:
    return submitted_event(rid, score, NOW, days_ago, channel, **attributes)


def recompute(events: list[ResponseSubmitted]) -> dict[tuple[str, date], Counts]:
    """From scratch: first version of each response_id, every segment it belongs to."""
    distinct: dict[str, ResponseSubmitted] = {}
    for e in events:
        distinct.setdefault(e.response_id, e)
    expected: dict[tuple[str, date], Counts] = defaultdict(Counts)
    for e in distinct.values():
        one = Counts.from_scores([e.score])
        day = e.answered_at.astimezone(UTC).date()
        keys = ["all"] + ([f"channel:{e.channel}"] if e.channel else []) + [f"{k}:{v}" for k, v in e.attributes.items()]
        for key in keys:
            expected[(key, day)] = expected[(key, day)] + one
    return dict(expected)


async def stored(database_url: str) -> dict[tuple[str, date], Counts]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT * FROM scoring.daily_counts"))
            return {(r.segment, r.day): Counts(r.promoters, r.passives, r.detractors) for r in rows}
    finally:
        await engine.dispose()


def pinned_spec(settings: ScoringSettings) -> ConsumerSpec[Any]:
    """The service's own spec, with the handler's clock pinned (no flakiness at midnight UTC)."""
    return spec(settings, now=lambda: NOW)


async def test_aggregates_equal_a_recompute_under_duplicates_late_events_and_replay(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    first = [
        event("a", 10, product="atlas"),
        event("b", 9, product="atlas"),
        event("c", 7, channel="email"),
        event("d", 3, product="zephyr"),
        event("e", 0, channel=None),
        event("a", 10, product="atlas"),  # a retried POST, same batch
        event("late", 2, days_ago=20, product="atlas"),  # lands in its own day, 20 days back
    ]
    second = [event("b", 9, product="atlas"), event("f", 8), event("g", 1, days_ago=40)]  # retry + new
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(first))
        async with running_loop(settings, pinned_spec(settings)) as run:
            await eventually(run.committed_at_least(len(first)))
            await produce(producer, settings.topics.responses, keyed(second))
            await eventually(run.committed_at_least(len(first) + len(second)))

    everything = first + second
    assert await stored(database_url) == recompute(everything)

    # What the query API serves (the handler behind GET /v1/nps) equals the recompute too.
    engine = make_engine(database_url)
    async with engine.connect() as conn:
        for segment, days in [("all", 30), ("all", 7), ("product:atlas", 30), ("channel:web", 90), ("all", 90)]:
            served = await handlers.score(conn, segment, days, TODAY)
            expected = sum(
                (c for (s, d), c in recompute(everything).items() if s == segment and d in window(TODAY, days)),
                Counts(),
            )
            assert served.counts == expected, (segment, days)
    await engine.dispose()

    # A replay of the whole topic (a new consumer group from offset 0) changes nothing.
    replay = settings_for(bootstrap, database_url, namespace, group="scoring-replay")
    async with running_loop(replay, pinned_spec(replay)) as run:
        await eventually(run.committed_at_least(len(everything)))
    assert await stored(database_url) == recompute(everything)


async def test_score_changed_events_carry_the_current_and_baseline_windows(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    responses = [
        event("p1", 10, days_ago=1),
        event("p2", 9, days_ago=10),
        event("d1", 0, days_ago=10),
        event("d2", 5, days_ago=40),
    ]
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, [(b"same-key", e.to_bytes()) for e in responses])
    async with running_loop(settings, pinned_spec(settings)) as run:
        await eventually(run.committed_at_least(len(responses)))

    records = await read_topic(bootstrap, settings.topics.scores, expect=2)
    latest = {}
    for record in records:
        changed = score_events.validate_json(record.value)
        assert record.key == changed.segment.encode()  # keyed by segment: one segment, one partition
        latest[changed.segment] = changed
    assert set(latest) == {"all", "channel:web"}
    current, baseline = window(TODAY, 7), preceding(window(TODAY, 7), 28)
    for changed in latest.values():
        assert (changed.current.first_day, changed.current.last_day) == (current.first, current.last)
        assert (changed.baseline.first_day, changed.baseline.last_day) == (baseline.first, baseline.last)
        assert changed.current.counts == Counts(1, 0, 0)  # p1 (yesterday)
        assert changed.baseline.counts == Counts(1, 0, 1)  # p2, d1 (10 days ago); d2 is 40 days back
        # ...and the days themselves (84 of them by default, for alerts' own windows and its EWMA):
        # only days with responses, oldest first
        assert changed.daily_first_day == TODAY - timedelta(days=83)
        assert [(d.day, d.counts) for d in changed.daily or []] == [
            (TODAY - timedelta(days=40), Counts(0, 0, 1)),
            (TODAY - timedelta(days=10), Counts(1, 0, 1)),
            (TODAY - timedelta(days=1), Counts(1, 0, 0)),
        ]


async def test_the_configured_segments_nps_interval_and_responses_reach_their_gauges(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace).model_copy(
        update={"metric_segments": "product:gauged; channel:sms; product:gauged", "metric_interval_s": 0.2}
    )
    assert settings.gauge_segments == ["product:gauged", "channel:sms"]
    await create_topics(settings)
    responses = [
        event("g1", 10, days_ago=1, product="gauged"),
        event("g2", 9, days_ago=6, product="gauged"),
        event("g3", 8, days_ago=2, product="gauged"),
        event("g4", 3, days_ago=0, product="gauged"),
        event("g4", 3, days_ago=0, product="gauged"),  # a duplicate counts once
        event("g5", 0, days_ago=7, product="gauged"),  # outside the 7-day window
        event("o1", 0, days_ago=1, product="other"),  # not a configured segment: never a label
    ]
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, [(b"k", e.to_bytes()) for e in responses])
    expected = Counts(promoters=2, passives=1, detractors=1)
    interval = ci95(expected)

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"segment": "product:gauged", **labels})

    async with running_loop(settings, pinned_spec(settings)) as run:
        await eventually(run.committed_at_least(len(responses)))

        async def gauged() -> bool:
            return sample("nps_segment_responses", category="detractor") == 1 and sample("nps_segment_score") == 25

        await eventually(gauged, timeout=10)
    assert [sample("nps_segment_responses", category=c) for c in ("promoter", "passive", "detractor")] == [2, 1, 1]
    assert (sample("nps_segment_score_ci95_low"), sample("nps_segment_score_ci95_high")) == (
        interval.low,
        interval.high,
    )
    assert REGISTRY.get_sample_value("nps_segment_window_days") == 7
    empty = REGISTRY.get_sample_value("nps_segment_score", {"segment": "channel:sms"})
    assert empty is not None and math.isnan(empty)  # no response yet: NaN, a gap on a graph, not a 0
    assert REGISTRY.get_sample_value("nps_segment_score", {"segment": "product:other"}) is None
