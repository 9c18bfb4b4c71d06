"""The pool pings a connection before use only when it has rested (shared.db.ping_when_rested):
one used a moment ago goes straight to its statement; one that rested is pinged, and replaced if
its server connection is gone; one that died a moment ago fails its statement as the database
being away, and the next checkout gets a new connection. A pool keeps the connections a burst of
up to its size opened, and each names its service. Against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import MAX_OVERFLOW, database_unavailable, make_engine

pytestmark = pytest.mark.integration

RESTED_S = 0.3


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=1, rested_s=RESTED_S)
    yield engine
    await engine.dispose()


def count_pings(engine: AsyncEngine) -> list[int]:
    dialect = engine.sync_engine.dialect
    pings = [0]
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings[0] += 1
        return ping(dbapi_connection)

    dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(database_url: str, pid: int) -> None:
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_connection_used_a_moment_ago_is_not_pinged(engine: AsyncEngine) -> None:
    pings = count_pings(engine)
    pids = {await backend_pid(engine) for _ in range(20)}
    assert pings[0] == 0
    assert len(pids) == 1  # the one pooled connection, each time
    await asyncio.sleep(RESTED_S + 0.1)
    assert await backend_pid(engine) in pids
    assert pings[0] == 1  # it had rested: pinged once, and kept


async def test_a_rested_connection_whose_server_went_away_is_replaced(engine: AsyncEngine, database_url: str) -> None:
    pings = count_pings(engine)
    first = await backend_pid(engine)
    await terminate(database_url, first)
    await asyncio.sleep(RESTED_S + 0.1)
    second = await backend_pid(engine)  # no error: the ping found it gone, the pool opened another
    assert second != first
    assert pings[0] == 1


async def test_a_connection_that_died_a_moment_ago_fails_once_as_the_database_away(
    engine: AsyncEngine, database_url: str
) -> None:
    first = await backend_pid(engine)
    await terminate(database_url, first)
    await asyncio.sleep(0.05)  # the server has closed it; well under RESTED_S, so no ping
    with pytest.raises(DBAPIError) as failed:
        await backend_pid(engine)
    assert database_unavailable(failed.value)  # consumers retry it; a query answers 503
    assert await backend_pid(engine) != first  # the pool dropped it: the next use has a new one


async def test_a_pool_keeps_what_a_burst_of_its_size_opened_and_names_its_service(database_url: str) -> None:
    engine = make_engine(database_url, name="nps-test")
    try:
        size = engine.sync_engine.pool.size()
        assert size == 10

        async def burst(n: int) -> set[int]:
            release = asyncio.Event()
            pids: set[int] = set()

            async def hold() -> None:
                async with engine.connect() as conn:
                    pids.add(int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()))
                    if len(pids) == n:
                        release.set()
                    await release.wait()

            await asyncio.wait_for(asyncio.gather(*(hold() for _ in range(n))), 10)
            return pids

        first = await burst(size)
        assert await burst(size) == first  # all kept: none closed after the burst, none opened again
        beyond = await burst(size + MAX_OVERFLOW)
        assert first < beyond  # the overflow ones are new
        assert len(await burst(size + MAX_OVERFLOW) - beyond) == MAX_OVERFLOW  # and were not kept
        async with engine.connect() as conn:
            named = (await conn.execute(sa.text("SELECT current_setting('application_name')"))).scalar_one()
        assert named == "nps-test"
    finally:
        await engine.dispose()
