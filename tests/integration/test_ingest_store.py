"""Ingest's idempotency record (ResponseStore.record_all) against the real database: first uses,
retries and reused ids, the event log, and a plan that never reads the whole table."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ingest_service.domain import Submission, SubmitResponse, submission
from ingest_service.repository import ResponseStore, StoreUnavailable, record_on
from shared.db import async_url, driver_of, make_engine
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


_OPTIONAL = st.sampled_from([None, "web", "Zürich", "a b"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(_OPTIONAL, _OPTIONAL, st.text(max_size=20), st.integers(0, 10), st.integers(-3_000, 3_000)),
        min_size=1,
        max_size=12,
    )
)
async def test_every_column_and_event_is_stored_as_given(
    database_url: str, given_items: list[tuple[str | None, str | None, str, int, int]]
) -> None:
    """A group's text columns and events go to PostgreSQL as one value each, split there: whatever
    mix of channels and surveys with and without a value (a lone one without included), any
    comment, each row and event is the item's own."""
    run = uuid.uuid4().hex[:8]
    items = [
        submission(
            SubmitResponse(
                response_id=f"{run}-{i}",
                respondent_id=f"{run}-u{i % 3}",
                score=score,
                channel=channel,
                survey_id=survey,
                comment="".join(c for c in comment if c.isprintable()) or None,
                answered_at=(NOW - timedelta(seconds=seconds)).isoformat(),  # type: ignore[arg-type]
            ),
            NOW,
            "tests",
        )
        for i, (channel, survey, comment, score, seconds) in enumerate(given_items)
    ]
    engine = make_engine(database_url)
    try:
        assert await ResponseStore(engine).record_all(items) == {}
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT response_id, respondent_id, fingerprint, channel, survey_id, answered_at "
                    "FROM ingest.responses WHERE response_id LIKE :run"
                ),
                {"run": f"{run}-%"},
            )
            stored = {r[0]: tuple(r) for r in rows}
            logged = await conn.execute(
                sa.text("SELECT respondent_id, event FROM ingest.events WHERE respondent_id LIKE :run"),
                {"run": f"{run}-%"},
            )
            events = sorted((r[0], bytes(r[1])) for r in logged)
    finally:
        await engine.dispose()
    assert stored == {
        s.response_id: (s.response_id, s.respondent_id, s.fingerprint, s.channel, s.survey_id, s.answered_at)
        for s in items
    }
    assert events == sorted((s.respondent_id, s.event) for s in items)


async def test_a_value_holding_the_separator_is_refused_not_split(database_url: str) -> None:
    """Validation keeps control characters out of every recorded text; were one to get through,
    the record refuses it rather than storing shifted columns."""
    engine = make_engine(database_url)
    try:
        good = item("sep-ok")
        smuggled = Submission("sep-2", "u\x1fx", None, None, NOW, good.fingerprint, good.event)  # built past validation
        async with engine.connect() as conn:
            with pytest.raises(ValueError, match="separator"):
                await record_on(await driver_of(conn), [good, smuggled])
            count = await conn.scalar(sa.text("SELECT count(*) FROM ingest.responses WHERE response_id LIKE 'sep-%'"))
        assert count == 0
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


async def backend_of(store: ResponseStore) -> int:
    """The server process behind the recorder's connection."""
    driver = store._held.current
    assert driver is not None
    return int(await driver.fetchval("SELECT pg_backend_pid()"))


async def end_backend(admin: AsyncEngine, backend: int) -> None:
    async with admin.connect() as conn:
        await conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend})


async def test_the_recorder_keeps_one_connection_and_replaces_it_once_it_dies(database_url: str) -> None:
    """record_group keeps its connection (and the asyncpg one under it) from group to group; once
    it is known closed (the server ended it, or a deadline closed it: shared/deadline.py), the
    next group records on a new one instead of failing on it."""
    engine = make_engine(database_url)
    admin = make_engine(database_url)
    try:
        store = ResponseStore(engine)
        assert await store.record_group([item("k1")]) == {}
        first = await backend_of(store)
        assert await store.record_group([item("k2")]) == {}
        assert await backend_of(store) == first
        await end_backend(admin, first)
        driver = store._held.current
        assert driver is not None

        async def closed() -> bool:  # the server's goodbye read (a query racing it: the next test)
            return driver.is_closed()

        await eventually(closed)
        assert await store.record_group([item("k3"), item("k1")]) == {"k1": item("k1").fingerprint}
        assert await backend_of(store) != first
        await store.close()
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_a_group_sent_as_the_server_ends_the_connection_is_unavailable_not_a_failure(database_url: str) -> None:
    """Sent at once after the server ends the recorder's backend, a group meets either a closed
    connection (replaced: the group is recorded) or asyncpg's protocol still consuming the
    server's goodbye (InternalClientError): the database being away (503, retried), never a
    failure of ours (500). Five times, as the timing decides which one it meets."""
    engine = make_engine(database_url)
    admin = make_engine(database_url)
    try:
        store = ResponseStore(engine)
        for attempt in range(5):
            assert await store.record_group([item(f"t{attempt}")]) == {}
            await end_backend(admin, await backend_of(store))
            with contextlib.suppress(StoreUnavailable):
                assert await store.record_group([item(f"u{attempt}")]) == {}
        await store.close()
    finally:
        await engine.dispose()
        await admin.dispose()
