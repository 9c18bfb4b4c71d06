"""End-to-end latency: POSTs to ingest at a steady rate, and the time from a probe's 202 to its
score being visible in scoring's GET /v1/nps."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass

PRODUCTS = [f"product-{i}" for i in range(20)]


@dataclass
class LatencyProbe:
    sent: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int


async def end_to_end(ingest: str, scoring: str, key: str, rate: int, seconds: int, every: int = 50) -> LatencyProbe:
    """POST `rate` responses/s for `seconds` over keep-alive connections; every `every`-th one is
    a probe with its own segment, polled on GET /v1/nps until it is counted."""
    host, port = ingest.removeprefix("http://").split(":")
    s_host, s_port = scoring.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    watching: set[asyncio.Task[None]] = set()  # strong references: an unreferenced task can be collected
    queue: asyncio.Queue[tuple[bytes, str | None]] = asyncio.Queue()

    async def poster() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            body, probe = await queue.get()
            writer.write(
                b"POST /v1/responses HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            status, length = await read_head(reader)
            await reader.readexactly(length)
            acked = time.perf_counter()
            if status != 202:
                errors += 1
            elif probe is not None:
                task = asyncio.get_running_loop().create_task(watch(probe, acked))
                watching.add(task)
                task.add_done_callback(watching.discard)
            queue.task_done()

    async def watch(probe: str, acked: float) -> None:
        reader, writer = await asyncio.open_connection(s_host, int(s_port))
        try:
            while time.perf_counter() - acked < 10:
                path = f"/v1/nps?window=1d&segment=probe:{probe}"
                # Every query API needs a key since issue 10: without it the probe read 401s.
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
                await writer.drain()
                status, length = await read_head(reader)
                answer = json.loads(await reader.readexactly(length))
                if status == 200 and answer["n"] == 1:
                    latencies.append(time.perf_counter() - acked)
                    return
                await asyncio.sleep(0.01)
        finally:
            writer.close()

    workers = [asyncio.create_task(poster()) for _ in range(16)]
    sent = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            probe = uuid.uuid4().hex[:12] if sent % every == 0 else None
            attributes = {"product": random.choice(PRODUCTS), **({"probe": probe} if probe else {})}
            body = json.dumps(
                {"respondent_id": f"p{sent}", "score": sent % 11, "channel": "web", "attributes": attributes}
            ).encode()
            queue.put_nowait((body, probe))
            sent += 1
        await asyncio.sleep(0.002)
    await queue.join()
    for w in workers:
        w.cancel()
    if watching:
        await asyncio.wait(set(watching), timeout=15)  # each gives up after 10 s
    latencies.sort()
    probes = (sent + every - 1) // every
    missing = probes - len(latencies)

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return LatencyProbe(
        sent, pct(0.5), pct(0.99), 1000 * latencies[-1] if latencies else float("nan"), errors + missing
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    return status, length
