"""Ingest's idempotency record (ResponseStore.record_all) against the real database: first uses,
retries and reused ids, the event log, and a plan that never reads the whole table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ingest_service.domain import Submission, SubmitResponse, submission
from ingest_service.repository import ResponseStore
from shared.db import async_url, make_engine
from tests.helpers import eventually

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def item(response_id: str, score: int = 7, respondent: str = "u1") -> Submission:
    return submission(SubmitResponse(response_id=response_id, respondent_id=respondent, score=score), NOW, "tests")


async def test_first_uses_are_logged_once_and_a_reused_id_returns_its_first_fingerprint(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        store = ResponseStore(engine)
        a, b = item("a"), item("b", respondent="u2")
        assert await store.record_all([a, b]) == {}
        b_changed, c = item("b", score=0, respondent="u2"), item("c")
        assert await store.record_all([c, b_changed, a]) == {"a": a.fingerprint, "b": b.fingerprint}
        async with engine.connect() as conn:
            stored = dict((await conn.execute(sa.text("SELECT response_id, fingerprint FROM ingest.responses"))).all())
            logged = (await conn.execute(sa.text("SELECT respondent_id, event FROM ingest.events ORDER BY seq"))).all()
        assert stored == {"a": a.fingerprint, "b": b.fingerprint, "c": c.fingerprint}
        # One logged event per first use, in id order; the retry of a and the reused b add none.
        assert [(r.respondent_id, bytes(r.event)) for r in logged] == [
            ("u1", a.event),
            ("u2", b.event),
            ("u1", c.event),
        ]
    finally:
        await engine.dispose()


async def test_two_writers_with_one_id_and_two_bodies_cannot_both_record_it(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        store = ResponseStore(engine)
        for n in range(20):
            ids = [f"race-{n}-{i}" for i in range(50)]
            first = [item(i, score=1) for i in ids]
            second = [item(i, score=9) for i in reversed(ids)]  # the other order: no deadlock either
            one, other = await asyncio.gather(store.record_all(first), store.record_all(second))
            # Each id is a first use for exactly one writer; the other sees that writer's fingerprint.
            assert sorted([*one, *other]) == sorted(ids)
            assert all(fp == item(i, score=9).fingerprint for i, fp in one.items())
            assert all(fp == item(i, score=1).fingerprint for i, fp in other.items())
    finally:
        await engine.dispose()


async def test_recording_never_reads_the_whole_table(database_url: str) -> None:
    """With the plan a prepared statement settles on after five runs (forced here from the first),
    an id is found through the primary key however many rows the table holds. The plan of the
    earlier statement, cached while the table was small, read every row of it for every flush."""
    seeding = make_engine(database_url)
    try:  # a table of a few pages: its generic plan for `= ANY` was a sequential scan
        await ResponseStore(seeding).record_all([item(f"seed-{i}", respondent=f"u{i}") for i in range(400)])
    finally:
        await seeding.dispose()
    engine = create_async_engine(
        async_url(database_url),
        pool_size=1,
        max_overflow=0,
        connect_args={"server_settings": {"plan_cache_mode": "force_generic_plan"}},
    )
    try:
        store = ResponseStore(engine)
        before = await seq_scans(engine, inserted=400)
        for n in range(10):
            batch = [item(f"n{n}-{i}") for i in range(10)] + [item(f"seed-{n}", respondent=f"u{n}")]
            assert list(await store.record_all(batch)) == [f"seed-{n}"]
        assert await seq_scans(engine, inserted=500) == before
    finally:
        await engine.dispose()


async def seq_scans(engine: AsyncEngine, inserted: int) -> int:
    """Sequential scans of ingest.responses so far, once the statistics count `inserted` rows (a
    backend hands its counts on when idle; asked to, at once)."""
    found: list[int] = []

    async def counted() -> bool:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT seq_scan, n_tup_ins FROM pg_stat_user_tables WHERE relid = 'ingest.responses'::regclass"
                    )
                )
            ).one()
        found[:] = [int(row.seq_scan)]
        return int(row.n_tup_ins) >= inserted

    await eventually(counted, timeout=10)
    return found[0]
