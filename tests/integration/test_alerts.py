"""Alerts through the real loop, broker and database: fire once on a real drop, resolve once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from alerts_service.bootstrap import spec
from alerts_service.settings import AlertSettings
from shared.db import make_engine
from shared.events import ScoreChanged, ScoreDropDetected, ScoreDropResolved, WindowCounts, alert_events
from tests.helpers import FAST_GROUP, create_topics, eventually, produce, read_topic, running_loop, started_producer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)
AS_OF = date(2026, 11, 24)


def settings_for(bootstrap: str, database_url: str, namespace: str) -> AlertSettings:
    return AlertSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,  # type: ignore[arg-type]
        topic_namespace=namespace,
        topic_partitions=3,
        drop_points=10,
        min_responses=30,
        **FAST_GROUP,
    )


def changed(segment: str, current: tuple[int, int, int], baseline: tuple[int, int, int], minute: int) -> ScoreChanged:
    def counts(c: tuple[int, int, int], first: date, last: date) -> WindowCounts:
        return WindowCounts(first_day=first, last_day=last, promoters=c[0], passives=c[1], detractors=c[2])

    return ScoreChanged(
        segment=segment,
        as_of=AS_OF,
        current=counts(current, date(2026, 11, 18), AS_OF),
        baseline=counts(baseline, date(2026, 10, 21), date(2026, 11, 17)),
        computed_at=T0 + timedelta(minutes=minute),
    )


async def test_a_drop_fires_once_and_resolves_once(bootstrap: str, database_url: str, namespace: str) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    baseline = (60, 20, 20)  # NPS 40 on 100 responses
    phases = [
        [
            changed("channel:web", (10, 5, 5), baseline, 1),  # NPS 25, but only 20 responses: no verdict
            changed("channel:web", (15, 10, 15), baseline, 2),  # NPS 0 on 40: a drop -> fire
        ],
        [
            changed("channel:web", (15, 10, 16), baseline, 3),  # still dropped: no second alert
            changed("channel:web", (15, 10, 15), baseline, 2),  # redelivered/stale: ignored
        ],
        [
            changed("channel:web", (30, 10, 10), baseline, 4),  # NPS 40 again -> resolve
            changed("all", (40, 30, 30), baseline, 4),  # NPS 10 vs 40 -> fire for another segment
        ],
    ]
    sent = 0
    async with started_producer(bootstrap) as producer, running_loop(settings, spec(settings)) as run:
        for phase in phases:  # one batch per phase: state must carry across batches
            await produce(producer, settings.topics.scores, [(e.segment.encode(), e.to_bytes()) for e in phase])
            sent += len(phase)
            await eventually(run.committed_at_least(sent))

    records = await read_topic(bootstrap, settings.topics.alerts, expect=3)
    events = [alert_events.validate_json(r.value) for r in records]
    web = [e for e in events if e.segment == "channel:web"]
    assert [type(e) for e in web] == [ScoreDropDetected, ScoreDropResolved]
    fired, resolved = web
    assert isinstance(fired, ScoreDropDetected)
    assert fired.drop_points == pytest.approx(40.0) and fired.current_n == 40 and fired.baseline_n == 100
    assert resolved.alert_id == fired.alert_id
    assert [type(e) for e in events if e.segment == "all"] == [ScoreDropDetected]

    engine = make_engine(database_url)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT segment, resolved_at FROM alerts.alerts ORDER BY segment"))).all()
    await engine.dispose()
    assert [(r.segment, r.resolved_at is None) for r in rows] == [("all", True), ("channel:web", False)]


async def test_within_one_batch_only_the_latest_state_of_a_segment_counts(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    """A backlog replayed at once must not fire and resolve alerts for history already over."""
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    baseline = (60, 20, 20)
    burst = [
        changed("channel:web", (15, 10, 15), baseline, 1),  # a drop...
        changed("channel:web", (30, 10, 10), baseline, 2),  # ...already over by the newest event
    ]
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.scores, [(e.segment.encode(), e.to_bytes()) for e in burst])
    async with running_loop(settings, spec(settings)) as run:
        await eventually(run.committed_at_least(len(burst)))
    assert await read_topic(bootstrap, settings.topics.alerts, timeout=2) == []
