"""Scoring's exactness, through the real consumer loop, broker and PostgreSQL: whatever the delivery
(duplicates, redeliveries, reordering, late events, revisions, erasures, batch boundaries, a
SIGKILL at any moment), every aggregate the API serves equals a from-scratch recompute."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring_service import rebuild, repository
from scoring_service.bootstrap import create_app, spec
from scoring_service.settings import ScoringSettings
from services.embedded import free_port
from shared.consumer import Message
from shared.db import make_engine
from shared.events import ResponseEvent, ResponseSubmitted
from shared.kafka import group_committed
from shared.nps import Counts
from shared.service import GC_THRESHOLD, ConsumerSpec
from shared.windows import window
from shared.wire import wire_of
from tests import scoring_model
from tests.conftest import fresh_database
from tests.helpers import (
    FAST_GROUP_ENV,
    create_topics,
    eventually,
    keyed,
    nps_env,
    nps_here,
    produce,
    running_loop,
    second_owner_retries,
    serve_in_process,
    service_settings,
    start_service,
    started_producer,
    truncate,
)
from tests.scale import examples
from tests.scoring_model import START

pytestmark = pytest.mark.integration

AS_OF = START.date()
TABLES = ("responses", "daily_counts", "segments", "erasures", "segment_state", "outbox")


def scoring_settings(bootstrap: str, database_url: str, namespace: str, **extra: Any) -> ScoringSettings:
    return service_settings(
        bootstrap,
        database_url,
        namespace,
        ScoringSettings,
        group_id=f"g-{namespace}",
        combinations="product+region",
        **extra,
    )


def pinned(settings: ScoringSettings) -> ConsumerSpec[Any]:
    base = spec(settings)
    return replace(base, handler=replace(base.handler, clock=lambda: START))


async def served_equals_recompute(
    app_settings: ScoringSettings, database_url: str, events: list[ResponseEvent]
) -> None:
    """Every figure the query API serves, against the recompute."""
    expected = scoring_model.recompute(events, combos=True)
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await repository.all_daily(conn) == expected  # the table itself

        app = create_app(app_settings)
        headers = await serve_in_process(app, engine)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://scoring", headers=headers
        ) as client:

            def total(segment: str, first: date, last: date) -> Counts:
                return sum((c for (s, d), c in expected.items() if s == segment and first <= d <= last), Counts())

            segments = {s for s, _ in expected} | {"all", "channel:fax"}
            for segment in sorted(segments):
                for days, as_of in [(7, AS_OF), (30, AS_OF), (90, AS_OF), (7, AS_OF - timedelta(days=10))]:
                    reply = await client.get(
                        "/v1/nps", params={"segment": segment, "window": f"{days}d", "as_of": as_of.isoformat()}
                    )
                    assert reply.status_code == 200, reply.text
                    got = reply.json()
                    span = window(as_of, days)
                    want = total(segment, span.first, span.last)
                    assert (got["promoters"], got["passives"], got["detractors"]) == (
                        want.promoters,
                        want.passives,
                        want.detractors,
                    ), (segment, days, as_of)
            for dimension in ("channel", "product", "region", "product,region"):
                reply = await client.get(
                    "/v1/nps/breakdown", params={"dimension": dimension, "window": "90d", "as_of": AS_OF.isoformat()}
                )
                assert reply.status_code == 200, reply.text
                span = window(AS_OF, 90)
                got_values = {
                    row["segment"]: Counts(row["promoters"], row["passives"], row["detractors"])
                    for row in reply.json()["values"]
                }
                prefix = "product:" if dimension == "product,region" else f"{dimension}:"
                want_values = {
                    s: total(s, span.first, span.last)
                    for s, _ in expected
                    if s.startswith(prefix) and ("," in s) == ("," in dimension)
                }
                assert got_values == {s: c for s, c in want_values.items() if c.n}, dimension
            reply = await client.get(
                "/v1/nps/series",
                params={"interval": "day", "from": (AS_OF - timedelta(days=45)).isoformat(), "to": AS_OF.isoformat()},
            )
            assert reply.status_code == 200, reply.text
            for point in reply.json()["points"]:
                day = date.fromisoformat(point["first_day"])
                assert Counts(point["promoters"], point["passives"], point["detractors"]) == total("all", day, day)
    finally:
        await engine.dispose()


@settings(
    max_examples=examples(12),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_served_aggregate_equals_a_recompute_under_any_delivery(
    data: st.DataObject, bootstrap: str, database_url: str
) -> None:
    history = data.draw(scoring_model.histories(max_ops=40), label="history")
    delivered = data.draw(scoring_model.deliveries(history), label="delivered")
    max_batch = data.draw(st.integers(1, 25), label="max_batch")
    await truncate(database_url, "scoring", TABLES)
    settings_ = scoring_settings(bootstrap, database_url, f"x{uuid.uuid4().hex[:10]}", consumer_max_batch=max_batch)
    await create_topics(settings_)
    async with started_producer(bootstrap) as producer:
        # One partition key for all: the loop sees exactly this order (other orders are drawn).
        await produce(producer, settings_.topics.responses, [(b"k", e.to_bytes()) for e in delivered])
    async with running_loop(settings_, pinned(settings_)) as run:
        await eventually(run.committed_at_least(len(delivered)), timeout=30)
    await served_equals_recompute(settings_, database_url, history)


async def test_sigkill_at_any_moment_loses_nothing_and_counts_nothing_twice(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Any
) -> None:
    """`nps scoring` as a process, killed with SIGKILL three times while it works through a backlog
    of submissions, duplicates, revisions and erasures; each time started again."""
    settings_ = scoring_settings(bootstrap, database_url, namespace)
    await create_topics(settings_)
    rng = random.Random(7)
    events = [e for n in range(500) for e in scoring_model.build_history(scoring_model.Seeded(rng), 40, f"h{n}-")]
    delivered = events + rng.sample(events, len(events) // 3)  # redeliveries and retries
    rng.shuffle(delivered)
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings_.topics.responses, [(b"k", e.to_bytes()) for e in delivered])

    env = nps_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=namespace,
        NPS_SCORING_GROUP_ID=settings_.group_id,
        NPS_SCORING_COMBINATIONS="product+region",
        NPS_CONSUMER_MAX_BATCH="100",
        **FAST_GROUP_ENV,
    )
    progress = []
    while len(progress) < 3:
        # Not start_service: that waits for /readyz, and the kill may land before it too.
        with (tmp_path / "scoring.log").open("ab") as log:
            victim = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services",
                "scoring",
                env={**env, "NPS_SCORING_PORT": str(free_port())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if progress:  # anywhere: during the start too, or after the backlog
            await asyncio.sleep(rng.uniform(1.5, 6.0))
        else:  # the first lands mid-way however fast scoring is: within a second of its first commit

            async def started() -> bool:
                return await group_committed(bootstrap, settings_.group_id, settings_.topics.responses) > 0

            await eventually(started, timeout=60)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
        os.kill(victim.pid, signal.SIGKILL)
        await victim.wait()
        progress.append(await group_committed(bootstrap, settings_.group_id, settings_.topics.responses))
    # The kills landed mid-way through the backlog, not after it (else this tests nothing).
    assert progress[0] < len(delivered), progress
    print(f"committed after each SIGKILL: {progress} of {len(delivered)}")
    process = start_service("scoring", env, tmp_path / "scoring.log", free_port())
    try:

        async def caught_up() -> bool:
            return await group_committed(bootstrap, settings_.group_id, settings_.topics.responses) >= len(delivered)

        await eventually(caught_up, timeout=90, every=0.5)
    finally:
        assert process.stop() == 0, process.log.read_text()[-3000:]
    await served_equals_recompute(settings_, database_url, events)


async def test_a_rebuild_runs_with_the_collector_the_consumers_have(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    """A rebuild is one long batch job, as a consumer is: its collector is set as a consumer's
    (tune_gc; at Python's default, a replay spent ~8% of its time collecting)."""
    settings_ = scoring_settings(bootstrap, database_url, namespace)
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.set_threshold(700, 10, 10)  # Python's default
    try:
        assert await rebuild.run(settings_, replay_log=False, check_only=True) == 0
        assert gc.get_threshold() == GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        if not frozen:
            gc.unfreeze()


async def test_rebuild_from_responses_and_replay_from_the_log_equal_the_live_state(
    bootstrap: str, database_url: str, pg_admin_url: str, namespace: str
) -> None:
    settings_ = scoring_settings(bootstrap, database_url, namespace, consumer_max_batch=200)
    await create_topics(settings_)
    rng = random.Random(11)
    events = [e for n in range(40) for e in scoring_model.build_history(scoring_model.Seeded(rng), 40, f"h{n}-")]
    delivered = events + rng.sample(events, len(events) // 4)
    rng.shuffle(delivered)
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings_.topics.responses, keyed(delivered))
        await produce(producer, settings_.topics.responses, [(b"k", b"not an event")])  # skipped by replay
    async with running_loop(settings_, pinned(settings_)) as run:
        await eventually(run.committed_at_least(len(delivered) + 1), timeout=30)
    live = await daily_counts(database_url)
    assert live == scoring_model.recompute(events, combos=True)

    env = nps_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=namespace,
        NPS_SCORING_COMBINATIONS="product+region",
    )
    checked = nps_here("scoring", "rebuild", "--check", env=env)
    assert checked.returncode == 0 and "0 differ" in checked.stdout, checked.stdout + checked.stderr

    # Damage the aggregates: --check sees it, a rebuild repairs it.
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE scoring.daily_counts SET promoters = promoters + 5 WHERE segment = 'all'"))
    await engine.dispose()
    damaged = nps_here("scoring", "rebuild", "--check", env=env)
    assert damaged.returncode == 1 and "0 differ" not in damaged.stdout, damaged.stdout
    rebuilt = nps_here("scoring", "rebuild", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert await daily_counts(database_url) == live

    # Replay the whole log into an empty database: the same state again.
    empty = await asyncio.to_thread(fresh_database, pg_admin_url)
    replayed = nps_here("scoring", "rebuild", "--replay", env={**env, "DATABASE_URL": empty})
    assert replayed.returncode == 0, replayed.stderr
    assert "1 undecodable" in replayed.stdout, replayed.stdout
    assert await daily_counts(empty) == live
    refused = nps_here("scoring", "rebuild", "--replay", env={**env, "DATABASE_URL": empty})
    assert refused.returncode == 2 and "empty" in refused.stdout


async def daily_counts(database_url: str) -> dict[tuple[str, date], Counts]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await repository.all_daily(conn)
    finally:
        await engine.dispose()


async def test_two_consumers_applying_one_new_response_at_once_count_it_once(database_url: str) -> None:
    """During a rebalance the old owner of a partition may still be applying a batch that the new
    owner applies too. The second transaction to write a new response must not add its counts
    again: it is rolled back and applied anew (the loop retries RetryBatch)."""
    settings_ = scoring_settings("127.0.0.1:1", database_url, "race")
    handler = spec(settings_).handler
    event = ResponseSubmitted(
        response_id="race-1", respondent_id="racer", score=9, answered_at=START, submitted_at=START
    )
    batch = [Message(wire_of(event), "t", 0, 0, 0)]
    engine = make_engine(database_url)
    try:
        await second_owner_retries(engine, lambda conn: handler(conn, batch), lambda conn: handler(conn, batch))
        async with engine.begin() as conn:  # the retry
            await handler(conn, batch)
        async with engine.connect() as conn:
            assert await repository.all_daily(conn) == {("all", START.date()): Counts(1, 0, 0)}
    finally:
        await engine.dispose()
