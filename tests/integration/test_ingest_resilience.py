"""Ingest when things break: a hung or dead broker, a dead database, a flood. Each test owns the
piece it breaks (its own broker or PostgreSQL), so nothing else in the session is disturbed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from services.embedded import EmbeddedBroker, EmbeddedPostgres
from shared.db import upgrade
from shared.events import response_events
from shared.kafka import ensure_topics
from tests.helpers import eventually, read_topic, signal_all
from tests.integration.conftest import LiveIngest, live_ingest

pytestmark = pytest.mark.integration


async def post_one(client: httpx.AsyncClient, ingest: LiveIngest) -> tuple[str, httpx.Response, float]:
    response_id = f"r-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    reply = await client.post(
        f"{ingest.url}/v1/responses",
        headers=ingest.auth,
        json={"response_id": response_id, "respondent_id": f"u-{response_id}", "score": 8},
    )
    return response_id, reply, time.monotonic() - started


async def ids_on_topic(ingest: LiveIngest, bootstrap: str, expect: int) -> Counter[str]:
    records = await read_topic(bootstrap, ingest.topics.responses, expect=expect, timeout=15, settle=2)
    return Counter(response_events.validate_json(r.value).response_id for r in records)  # type: ignore[union-attr]


def assert_unavailable(reply: httpx.Response, elapsed: float, code: str) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.json()["code"] == code
    assert int(reply.headers["retry-after"]) >= 1
    # A client must learn of the outage within a second: publish timeout 0.9 s, plus scheduling slack
    assert elapsed < 1.5, elapsed


async def test_a_hung_broker_gets_503_fast_and_recovery_needs_no_restart(
    pg_admin_url: str, own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    ingest = await asyncio.to_thread(live_ingest, pg_admin_url, own_broker.bootstrap, tmp_path)
    accepted: list[str] = []
    refused: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(10):
                response_id, reply, _ = await post_one(client, ingest)
                assert reply.status_code == 202
                accepted.append(response_id)

            assert own_broker.pid is not None
            signal_all([own_broker.pid], signal.SIGSTOP)  # the broker hangs: connections open, nothing answered
            for _ in range(3):
                response_id, reply, elapsed = await post_one(client, ingest)
                assert_unavailable(reply, elapsed, "broker_unavailable")
                assert reply.json()["response_id"] == response_id  # the outcome is unknown: retry with it
                refused.append(response_id)
            # Without a response_id of its own, the client learns the one ingest assigned.
            anonymous = {"respondent_id": "u-anonymous", "score": 4, "comment": "slow"}
            reply = await client.post(f"{ingest.url}/v1/responses", headers=ingest.auth, json=anonymous)
            assert_unavailable(reply, 0.0, "broker_unavailable")
            assigned = reply.json()["response_id"]
            assert assigned and "may or may not" in reply.json()["message"]
            assert (await client.get(f"{ingest.url}/readyz")).status_code == 503

            os.kill(own_broker.pid, signal.SIGCONT)

            async def recovered() -> bool:
                response_id, reply, _ = await post_one(client, ingest)
                if reply.status_code == 202:
                    accepted.append(response_id)
                    return True
                refused.append(response_id)
                return False

            await eventually(recovered, timeout=20, every=0.2)
            # The retry with the assigned id is the same response: accepted, not a conflict.
            again = await client.post(
                f"{ingest.url}/v1/responses", headers=ingest.auth, json={**anonymous, "response_id": assigned}
            )
            assert again.status_code == 202, again.text
            for _ in range(10):
                response_id, reply, _ = await post_one(client, ingest)
                assert reply.status_code == 202
                accepted.append(response_id)
    finally:
        assert ingest.process.stop() == 0

    seen = await ids_on_topic(ingest, own_broker.bootstrap, expect=len(accepted))
    assert all(seen[r] == 1 for r in accepted), {r: seen[r] for r in accepted if seen[r] != 1}
    # A 503 promised nothing: such a response may have reached the broker late, never twice.
    assert all(seen[r] <= 1 for r in refused)
    # The assigned id is there once or twice (a late copy of the first attempt, and the retry): the
    # same response_id, which every consumer counts once.
    assert 1 <= seen[assigned] <= 2


async def test_a_restarted_broker_is_used_again_by_itself(
    pg_admin_url: str, own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    ingest = await asyncio.to_thread(live_ingest, pg_admin_url, own_broker.bootstrap, tmp_path)
    after_restart: list[str] = []
    refused: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await post_one(client, ingest))[1].status_code == 202
            own_broker.stop()
            _, reply, elapsed = await post_one(client, ingest)
            assert_unavailable(reply, elapsed, "broker_unavailable")

            own_broker.start()  # same port; memory storage: the topics are gone and made again
            await ensure_topics(own_broker.bootstrap, ingest.topics.all(), 3)

            # Recovered = five 202s in a row. Right after a restart a few requests may still get a
            # retryable 503 (reconnecting; the local broker also races on a brand-new partition).
            streak = 0
            deadline = time.monotonic() + 30
            while streak < 5:
                assert time.monotonic() < deadline, "ingest did not recover within 30 s"
                response_id, reply, _ = await post_one(client, ingest)
                assert reply.status_code in (202, 503), reply.text
                if reply.status_code == 202:
                    after_restart.append(response_id)
                    streak += 1
                else:
                    refused.append(response_id)
                    streak = 0
                    await asyncio.sleep(0.2)
    finally:
        assert ingest.process.stop() == 0
    seen = await ids_on_topic(ingest, own_broker.bootstrap, expect=len(after_restart))
    assert all(seen[r] == 1 for r in after_restart), seen
    assert all(seen[r] <= 1 for r in refused)


async def test_a_dead_database_gets_503_and_recovery_needs_no_restart(bootstrap: str, tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", database="nps_template")
    url = await asyncio.to_thread(pg.start)
    await asyncio.to_thread(upgrade, url)
    ingest = await asyncio.to_thread(live_ingest, url, bootstrap, tmp_path)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await post_one(client, ingest))[1].status_code == 202
            pg.stop()
            _, reply, elapsed = await post_one(client, ingest)
            assert_unavailable(reply, elapsed, "database_unavailable")
            assert (await client.get(f"{ingest.url}/readyz")).status_code == 503

            await asyncio.to_thread(pg.start)

            async def recovered() -> bool:
                return (await post_one(client, ingest))[1].status_code == 202

            await eventually(recovered, timeout=20, every=0.3)
    finally:
        assert ingest.process.stop() == 0
        pg.stop()


async def test_a_flood_gets_429_with_retry_after(pg_admin_url: str, bootstrap: str, tmp_path: Path) -> None:
    ingest = await asyncio.to_thread(
        live_ingest, pg_admin_url, bootstrap, tmp_path, NPS_INGEST_RATE_LIMIT_PER_S="1", NPS_INGEST_RATE_LIMIT_BURST="3"
    )
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            statuses = [(await post_one(client, ingest))[1] for _ in range(5)]
            assert [r.status_code for r in statuses[:3]] == [202, 202, 202]  # the burst
            limited = statuses[3]
            assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
            wait = int(limited.headers["retry-after"])
            assert wait >= 1
            await asyncio.sleep(wait)
            assert (await post_one(client, ingest))[1].status_code == 202
    finally:
        assert ingest.process.stop() == 0


async def test_sigusr2_logs_every_task_and_where_it_waits_and_the_service_goes_on(ingest: LiveIngest) -> None:
    """A service that stopped making progress without a word can be asked where it waits: SIGUSR2
    logs each asyncio task with the chain of coroutines it awaits, and the service carries on."""
    logged_before = len(ingest.process.log.read_text())
    os.kill(ingest.process.process.pid, signal.SIGUSR2)

    async def dumped() -> bool:
        return "SIGUSR2:" in ingest.process.log.read_text()[logged_before:]

    await eventually(dumped, timeout=10)
    dump = ingest.process.log.read_text()[logged_before:]
    # The consumer of opt-outs waits in its loop's poll: the chain reaches from its task into aiokafka.
    assert "ConsumerLoop.run (consumer.py:" in dump and "AIOKafkaConsumer.getmany" in dump, dump[-3000:]
    assert "Server.serve" in dump, dump[-3000:]  # uvicorn's own task
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{ingest.url}/healthz")).status_code == 200
