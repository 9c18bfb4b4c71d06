"""The `nps` command against the real broker and database, as a deployment uses it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient
from alembic.script import ScriptDirectory

from services.embedded import free_port
from shared.db import SERVICE_SCHEMAS, alembic_config, make_engine
from tests.helpers import FAST_GROUP_ENV, TEST_PSEUDONYM_SECRET, TEST_SECRETS_KEY, nps, with_database

pytestmark = pytest.mark.integration


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(extra)
    return env


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def schemas_and_versions(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                schema: (await conn.execute(sa.text(f"SELECT version_num FROM {schema}.alembic_version"))).scalar_one()
                for schema in ("auth", "ingest", "scoring", "themes", "followup", "alerts", "delivery")
            }
    finally:
        await engine.dispose()


def test_nps_topics_creates_the_versioned_topics_once(bootstrap: str, namespace: str) -> None:
    env = base_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, NPS_TOPIC_NAMESPACE=namespace)
    first = nps("topics", env=env)
    assert first.returncode == 0, first.stderr
    expected = {f"{namespace}.{t}.v1" for t in ("responses", "scores", "followups", "tickets", "deadletter")}
    expected.add(f"{namespace}.alerts.v2")  # alerts' events changed shape: a new topic (docs/events.md)
    assert expected <= asyncio.run(list_topics(bootstrap))
    again = nps("topics", env=env)
    assert again.returncode == 0 and "nothing (all exist)" in again.stdout


def test_nps_migrate_brings_every_schema_to_head_and_is_idempotent(pg_admin_url: str) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(with_database(pg_admin_url, "postgres"))
        await conn.execute('CREATE DATABASE "cli_migrate"')
        await conn.close()

    asyncio.run(create())
    url = with_database(pg_admin_url, "cli_migrate")
    for _ in range(2):
        result = nps("migrate", env=base_env(DATABASE_URL=url))
        assert result.returncode == 0, result.stderr
    heads = {
        name: ScriptDirectory.from_config(alembic_config(location, url)).get_current_head()
        for name, location in SERVICE_SCHEMAS.items()
    }
    assert set(heads) == {"auth", "ingest", "scoring", "themes", "followup", "alerts", "delivery"} and all(
        heads.values()
    )
    assert asyncio.run(schemas_and_versions(url)) == heads


def test_nps_without_infrastructure_says_what_is_missing() -> None:
    result = nps("migrate", env=base_env())
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_nps_up_uses_the_given_database_and_broker_instead_of_embedded_ones(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Path
) -> None:
    # A database of its own needs the secret its keys are made with: nps up will not invent one.
    refused = nps("up", env=base_env(DATABASE_URL=database_url, NPS_VAR_DIR=str(tmp_path / "var")), timeout=30)
    assert refused.returncode == 2 and "NPS_PSEUDONYM_SECRET" in refused.stderr
    assert not (tmp_path / "var" / "pseudonym-secret").exists()
    # Nor the key its sealed secrets open with.
    without_key = base_env(
        DATABASE_URL=database_url, NPS_PSEUDONYM_SECRET=TEST_PSEUDONYM_SECRET, NPS_VAR_DIR=str(tmp_path / "var")
    )
    without_key.pop("NPS_SECRETS_KEY", None)
    refused = nps("up", env=without_key, timeout=30)
    assert refused.returncode == 2 and "NPS_SECRETS_KEY" in refused.stderr
    assert not (tmp_path / "var" / "secrets-key").exists()

    ports = {name: free_port() for name in ("ingest", "scoring", "followup", "alerts", "delivery", "themes")}
    env = base_env(
        NPS_PSEUDONYM_SECRET=TEST_PSEUDONYM_SECRET,
        NPS_SECRETS_KEY=TEST_SECRETS_KEY,
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=namespace,
        NPS_VAR_DIR=str(tmp_path / "var"),
        NPS_BROKER_PORT="1",  # would fail if it tried to start a broker
        **FAST_GROUP_ENV,
        **{f"NPS_{n.upper()}_PORT": str(p) for n, p in ports.items()},
        # The session broker is shared with the worker's other tests: groups of this test's own (a
        # group another test left members in waits for them to time out), joined as dynamic members
        # (a static member's first join waits ~6 s on the embedded broker, a dynamic one 1 s here).
        **{f"NPS_{n.upper()}_GROUP_ID": f"{namespace}-{n}" for n in ports if n != "ingest"},
        **{f"NPS_{n.upper()}_CONSUMER_INSTANCE_ID": "" for n in ports},
        NPS_INGEST_CONTACT_GROUP_ID=f"{namespace}-ingest-contact",  # ingest's mirror of the opt-outs
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        ready: set[str] = set()
        while ready != set(ports) and time.monotonic() < deadline and process.poll() is None:
            for name, port in ports.items():
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                        if reply.status == 200:
                            ready.add(name)
                except OSError:
                    pass
            time.sleep(0.3)
        assert ready == set(ports)
        assert not (tmp_path / "var" / "pg").exists()  # no embedded PostgreSQL was started
        assert f"{namespace}.responses.v1" in asyncio.run(list_topics(bootstrap))
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "embedded" not in output.split("The NPS feedback loop is running:")[-1].split("Ctrl-C")[0]
