"""Hostile clients against `nps ingest`: thousands of open connections and slowloris clients leave
/healthz answering and memory bounded; slow request heads are cut off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import LiveIngest, live_ingest

pytestmark = pytest.mark.integration


@pytest.fixture
def guarded(pg_admin_url: str, bootstrap: str, tmp_path: Path) -> Iterator[LiveIngest]:
    live = live_ingest(pg_admin_url, bootstrap, tmp_path, NPS_INGEST_HEAD_TIMEOUT_S="2")
    yield live
    assert live.process.stop() == 0, live.process.log.read_text()[-3000:]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(pid)


async def healthz_latencies(url: str, until: float) -> list[float]:
    """/healthz every 100 ms until `until`: each answer's latency (a 1 s timeout fails the test)."""
    latencies = []
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            reply = await client.get(f"{url}/healthz")
            assert reply.status_code == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    return latencies


async def test_connections_and_slowloris_leave_health_answering_and_memory_bounded(guarded: LiveIngest) -> None:
    host, port = guarded.url.removeprefix("http://").split(":")
    pid = guarded.process.process.pid
    before = rss_mb(pid)

    # 2,000 connections that never send a byte, and 200 that send a header byte every 0.5 s.
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(2_000)]
    slow = [await asyncio.open_connection(host, int(port)) for _ in range(200)]
    for _, writer in slow:
        writer.write(b"POST /v1/responses HTTP/1.1\r\nHost: ingest\r\n")

    async def drip(writer: asyncio.StreamWriter) -> None:
        for _ in range(12):
            if writer.is_closing():
                return
            writer.write(b"X")
            await asyncio.sleep(0.5)

    drips = [asyncio.create_task(drip(w)) for _, w in slow]
    latencies = await healthz_latencies(guarded.url, time.monotonic() + 4)
    during = rss_mb(pid)

    # The server cut every connection whose head did not arrive within the 2 s limit.
    async def closed_by_server(reader: asyncio.StreamReader) -> bool:
        try:
            await asyncio.wait_for(reader.read(), timeout=5)  # returns at the server's end of stream
        except ConnectionError:  # reset: closed as well
            return True
        except TimeoutError:
            return False
        return True

    results = await asyncio.gather(*(closed_by_server(r) for r, _ in [*slow, *idle]))
    await asyncio.gather(*drips, return_exceptions=True)
    for _, writer in [*slow, *idle]:
        writer.close()
    assert all(results), f"{results.count(False)} connections were still open after the head timeout"
    print(
        f"\n2,200 hostile connections: /healthz max {max(latencies) * 1000:.0f} ms over {len(latencies)} probes; "
        f"RSS {before:.0f} -> {during:.0f} MB"
    )
    assert during - before < 100, (before, during)

    # And the service is none the worse for it.
    async with httpx.AsyncClient(timeout=5) as client:
        body = {"respondent_id": "after-the-storm", "score": 9}
        reply = await client.post(f"{guarded.url}/v1/responses", json=body, headers=guarded.auth)
        assert reply.status_code == 202, reply.text
        metrics = (await client.get(f"{guarded.url}/metrics")).text
    timed_out = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("nps_http_heads_timed_out_total ")
    )
    assert timed_out >= 2_200
