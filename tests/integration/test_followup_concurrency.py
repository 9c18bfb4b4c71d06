"""Two follow-up consumers writing the same responses at the same moment (what a rebalance can do
for a while): still one follow-up per response, one active ticket per person, the contact rules
kept, and no follow-up published twice."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.bootstrap import load_policy, spec
from followup_service.handlers import RouteResponses
from followup_service.settings import FollowUpSettings
from shared.consumer import FORCE_CUSTOM_PLANS, Message
from shared.db import make_engine
from shared.events import FollowUpCreated, ResponseSubmitted, followup_events
from shared.kafka import group_committed
from shared.wire import Submitted
from tests.helpers import (
    TEST_PSEUDONYM_SECRET,
    create_topics,
    eventually,
    keyed,
    produce,
    read_topic,
    running_loop,
    second_owner_retries,
    started_producer,
)
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration


async def test_two_consumers_on_the_same_responses_route_each_once(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    first = settings_for(bootstrap, database_url, namespace, group="followup-a")
    second = settings_for(bootstrap, database_url, namespace, group="followup-b")  # reads everything too
    await create_topics(first)
    run = uuid.uuid4().hex[:6]
    rng = random.Random(7)
    now = datetime.now(UTC)
    events = [
        ResponseSubmitted(
            response_id=f"{run}-{i}",
            respondent_id=f"{run}-p{rng.randrange(150)}",  # people answer several times
            score=rng.randrange(11),
            answered_at=now,
            submitted_at=now,
        )
        for i in range(1_500)
    ]
    async with started_producer(bootstrap) as producer:
        await produce(producer, first.topics.responses, keyed(events))
    async with running_loop(first, spec(first)) as a, running_loop(second, spec(second)) as b:

        async def both_done() -> bool:  # each group has read (and committed) every event
            counts = [await group_committed(bootstrap, g, first.topics.responses) for g in ("followup-a", "followup-b")]
            return min(counts) >= len(events)

        await eventually(both_done, timeout=90, every=0.5)
        assert a.loop.batches_committed and b.loop.batches_committed  # both wrote
        async with a.engine.connect() as conn:
            active = (
                await conn.execute(
                    sa.text(
                        "SELECT respondent_key, count(*) AS n FROM followup.tickets "
                        "WHERE status IN ('open', 'in_progress', 'contacted') AND response_id LIKE :r GROUP BY 1"
                    ),
                    {"r": f"{run}-%"},
                )
            ).all()
            messages = (
                await conn.execute(
                    sa.text(
                        "SELECT respondent_key, kind, count(*) AS n FROM followup.followups WHERE response_id LIKE :r "
                        "AND status = 'created' AND kind NOT IN ('ticket', 'none') GROUP BY 1, 2"
                    ),
                    {"r": f"{run}-%"},
                )
            ).all()
        assert await _routed(a.engine, run) == len(events)
        assert all(row.n == 1 for row in active), "a person with two active tickets"
        assert all(row.n == 1 for row in messages), "a person messaged twice inside the contact rules"
    records = await read_topic(bootstrap, first.topics.followups, expect=None, timeout=3)
    published = Counter(
        e.followup_id
        for e in map(followup_events.validate_json, (r.value for r in records))
        if isinstance(e, FollowUpCreated)
    )
    assert published and max(published.values()) == 1


async def test_a_batch_another_consumer_wrote_meanwhile_is_retried_whole(database_url: str) -> None:
    """The second of two transactions routing the same responses waits for the first's locks on
    the people, then finds its reads stale: its writes fail as a whole (RetryBatch, nothing kept),
    and the retry on top of the first changes nothing."""
    settings = FollowUpSettings(
        database_url=database_url, pseudonym_secret=TEST_PSEUDONYM_SECRET, kafka_bootstrap_servers="unused:1"
    )
    handler = RouteResponses(
        topics=settings.topics,
        pseudonyms=settings.pseudonyms(),
        clock=lambda: datetime.now(UTC),
        policy=load_policy(settings),
        contact=settings.contact_rules(),
    )
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    people = [f"{run}-p{i % 7}" for i in range(40)]
    batch = [
        Message(Submitted(response_id=f"{run}-{i}", respondent_id=p, score=i % 11, answered_at=now,
                                  submitted_at=now), "responses", 0, i, 0)
        for i, p in enumerate(people)
    ]  # fmt: skip
    engine = make_engine(database_url)
    try:

        async def first(conn: AsyncConnection) -> None:
            await conn.execute(FORCE_CUSTOM_PLANS)
            await handler(conn, batch)

        # The second waits for the people the first transaction holds.
        await second_owner_retries(engine, first, lambda conn: handler(conn, batch))
        events_written = await _outbox_events(engine)
        async with engine.begin() as conn:
            await handler(conn, batch)  # the retry: every response is known now
        assert await _routed(engine, run) == len(batch)
        async with engine.connect() as conn:
            tickets = await conn.scalar(
                sa.text("SELECT count(*) FROM followup.tickets WHERE response_id LIKE :r"), {"r": f"{run}-%"}
            )
        assert tickets == len({m.event.respondent_id for m in batch if m.event.score <= 6})  # one per person
        assert await _outbox_events(engine) == events_written  # neither the failed batch nor the retry added any
    finally:
        await engine.dispose()


async def _outbox_events(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT coalesce(sum(coalesce(frames, 1)), 0) FROM followup.outbox")))


async def _routed(engine, run: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    sa.text("SELECT count(*) FROM followup.followups WHERE response_id LIKE :r"), {"r": f"{run}-%"}
                )
            ).scalar()
        )
