"""Session-wide real infrastructure: one embedded PostgreSQL and one tansu broker per test worker
(`make test` runs four: tests/scheduling.py).
Unit tests never touch these fixtures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import settings

from services.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from shared.db import upgrade
from shared.settings import async_url
from tests.helpers import with_database

# No timed assertions in tests: Hypothesis's per-example deadline (200 ms by default) is one, and a
# loaded 2-core machine made a Jinja rendering property test miss it. Speed is `make bench`'s.
settings.register_profile("nps", deadline=None)
settings.load_profile("nps")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`pytest -n`: tests that share a dear fixture run on one worker (tests/scheduling.py)."""
    from tests.scheduling import SharedFixtureScheduling

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", database="nps_template")
    url = server.start()
    upgrade(url)  # alembic upgrade head once; each test copies this migrated database
    yield url
    server.stop()


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = EmbeddedBroker(free_port(), tmp_path_factory.mktemp("broker") / "broker.log")
    yield broker.start()
    broker.stop()


def fresh_database(pg_admin_url: str) -> str:
    """A fresh, migrated database: a copy of the migrated template (milliseconds)."""
    name = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(with_database(pg_admin_url, "postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE nps_template')
        finally:
            await conn.close()

    asyncio.run(create())
    return async_url(with_database(pg_admin_url, name))


@pytest.fixture
def database_url(pg_admin_url: str) -> str:
    return fresh_database(pg_admin_url)


@pytest.fixture
def namespace() -> str:
    """A unique topic namespace per test: tests never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
