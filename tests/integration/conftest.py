from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.embedded import EmbeddedBroker, free_port
from shared.kafka import ensure_topics
from shared.settings import Topics
from tests.conftest import fresh_database
from tests.helpers import ServiceProcess, nps_env, nps_here, start_service


@dataclass
class LiveIngest:
    url: str
    key: str
    topics: Topics
    bootstrap: str
    database_url: str
    env: dict[str, str]
    process: ServiceProcess

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def live_ingest(pg_admin_url: str, bootstrap: str, workdir: Path, **settings: str) -> LiveIngest:
    """`nps ingest` on its own database and topic namespace, with an API key made by `nps keys`."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_topics(bootstrap, topics.all(), 3))
    database_url = fresh_database(pg_admin_url)
    env = nps_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=topics.namespace,
        NPS_INGEST_KEY_REFRESH_S="0.2",
        # Its mirror of the opt-outs in a group of its own (the session's broker serves every test).
        NPS_INGEST_CONTACT_GROUP_ID=f"{topics.namespace}-contact",
        **settings,
    )
    created = nps_here("keys", "create", "app-tests", "--scope", "responses:write,respondents:erase", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    process = start_service("ingest", env, workdir / "ingest.log", free_port())
    return LiveIngest(process.url, key, topics, bootstrap, database_url, env, process)


@pytest.fixture(scope="module")
def ingest(pg_admin_url: str, bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIngest]:
    live = live_ingest(pg_admin_url, bootstrap, tmp_path_factory.mktemp("ingest"), NPS_INGEST_RATE_LIMIT_PER_S="0")
    yield live
    assert live.process.stop() == 0, live.process.log.read_text()[-3000:]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, to stop or hang without disturbing the session's."""
    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log")
    broker.start()
    yield broker
    if broker.pid is not None:
        os.kill(broker.pid, signal.SIGCONT)  # in case a test left it stopped
    broker.stop()
