"""`nps ingest` as several processes on one port (NPS_INGEST_WORKERS): they answer together, their
metrics add up whichever one is asked, a worker that dies is replaced while the others serve, every
accepted response reaches the topic, and SIGTERM drains them all to a clean exit."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ingest_service.settings import IngestSettings
from services.embedded import free_port
from tests.helpers import create_topics, eventually, nps_env, nps_here, read_topic, service_settings, start_service

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def requests_counted(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("nps_http_requests_total{") and 'route="/v1/responses"' in line and 'status="2xx"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_workers_share_the_port_their_metrics_and_survive_one_dying(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = service_settings(bootstrap, database_url, namespace, IngestSettings)
    await create_topics(settings)
    env = nps_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=namespace,
        NPS_INGEST_WORKERS="2",
    )
    made = nps_here("keys", "create", f"workers-{uuid.uuid4().hex[:6]}", "--scope", "responses:write", env=env)
    assert made.returncode == 0, made.stderr
    auth = {"Authorization": f"Bearer {made.stdout.strip()}"}
    service = start_service("ingest", env, tmp_path / "ingest.log", free_port())
    try:

        async def two_workers() -> bool:
            return len(children(service.process.pid)) == 2

        try:
            await eventually(two_workers, timeout=30)
        except AssertionError:  # say why: a worker dying at start is restarted after a pause
            raise AssertionError(
                f"workers {children(service.process.pid)}:\n{service.log.read_text()[-3000:]}"
            ) from None
        workers = children(service.process.pid)
        seen = set(workers)
        run = uuid.uuid4().hex[:8]
        sent = 0
        # A new connection per request: the kernel hands each to whichever worker accepts it.
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:

            async def post_some(n: int) -> None:
                nonlocal sent
                for _ in range(n):
                    body = {"response_id": f"{run}-{sent}", "respondent_id": f"p{sent}", "score": sent % 11}
                    reply = await client.post(f"{service.url}/v1/responses", json=body, headers=auth)
                    assert reply.status_code == 202, reply.text
                    sent += 1

            await post_some(30)
            for _ in range(4):  # whichever worker answers /metrics, it reports all of them
                assert requests_counted((await client.get(f"{service.url}/metrics")).text) == 30

            logged_at_kill = len(service.log.read_text())
            os.kill(workers[0], signal.SIGKILL)  # one dies: the other serves, the parent replaces it

            async def replaced() -> bool:
                now = children(service.process.pid)
                seen.update(now)
                return len(now) == 2 and workers[0] not in now

            await eventually(replaced, timeout=30)

            async def ready() -> bool:
                try:
                    return (await client.get(f"{service.url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=30)
            await post_some(30)
            # The killed worker's counts stay in the total (counters of dead processes are kept).
            assert requests_counted((await client.get(f"{service.url}/metrics")).text) == 60

            # SIGUSR2 to the parent asks each worker where its tasks wait; the parent carries on. (Until
            # a worker has started, it ignores the signal: the replacement first.)
            async def replacement_started() -> bool:
                return "Application startup complete." in service.log.read_text()[logged_at_kill:]

            await eventually(replacement_started, timeout=30)
            logged_before = len(service.log.read_text())
            os.kill(service.process.pid, signal.SIGUSR2)

            async def both_dumped() -> bool:
                return service.log.read_text()[logged_before:].count("SIGUSR2:") == 2

            await eventually(both_dumped, timeout=10)
            assert service.process.poll() is None and len(children(service.process.pid)) == 2
        records = await read_topic(bootstrap, settings.topics.responses, expect=sent, timeout=20)
        assert len({rec.value for rec in records if run.encode() in (rec.value or b"")}) == sent
    finally:
        started = time.monotonic()
        code = service.stop()
        assert time.monotonic() - started < 30
    assert code == 0, service.log.read_text()[-3000:]
    assert running(seen) == []  # no worker outlives the parent


def running(pids: set[int]) -> list[int]:
    """The given pids that still exist as processes that are not zombies."""
    alive = []
    for pid in sorted(pids):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive
