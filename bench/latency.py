"""End-to-end latency: POSTs to ingest at a steady rate, and the time from a probe's 202 to its
score being visible in scoring's GET /v1/nps."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PRODUCTS = [f"product-{i}" for i in range(20)]
# How often a probe is asked for until it shows: the latencies are exact to this. Polled every
# 10 ms, ten probes a second kept each service answering thousands of GETs a second at 2,000
# POSTs/s (44% of scoring's and follow-up's CPU in the loop's sustained run, py-spy): the bench
# measured its own load.
POLL_S = 0.05


@dataclass
class LatencyProbe:
    sent: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    acked_s: float = 0.0  # from the first POST to the last 202: below `sent / rate` the load kept its rate

    @property
    def acked_rate(self) -> float:
        return self.sent / self.acked_s if self.acked_s else 0.0


@dataclass(frozen=True)
class Visible:
    """Where a probe shows once a service has it: GET `base``path(probe)`, counted when `seen`."""

    name: str
    base: str
    path: Callable[[str], str]
    seen: Callable[[int, Any], bool]


def in_scoring(scoring: str) -> Visible:
    return Visible(
        "scoring", scoring, lambda p: f"/v1/nps?window=1d&segment=probe:{p}", lambda s, a: s == 200 and a["n"] == 1
    )


def in_followup(followup: str) -> Visible:
    return Visible("followup", followup, lambda p: f"/v1/followups/probe-{p}", lambda s, a: s == 200)


def in_themes(themes: str) -> Visible:
    return Visible(
        "themes",
        themes,
        lambda p: f"/v1/themes?window=1d&segment=probe:{p}",
        lambda s, a: s == 200 and a["responses"] == 1,
    )


async def end_to_end(ingest: str, scoring: str, key: str, rate: int, seconds: int, every: int = 50) -> LatencyProbe:
    """POST 202 -> counted in scoring's GET /v1/nps."""
    return (await visible_after(ingest, key, rate, seconds, [in_scoring(scoring)], every))["scoring"]


async def visible_after(
    ingest: str, key: str, rate: int, seconds: int, where: Sequence[Visible], every: int = 50, connections: int = 16
) -> dict[str, LatencyProbe]:
    """POST `rate` responses/s for `seconds` over keep-alive connections; every `every`-th one is
    a probe (its own segment, response id and a comment), polled in each of `where` until it shows."""
    host, port = ingest.removeprefix("http://").split(":")
    latencies: dict[str, list[float]] = {w.name: [] for w in where}
    errors = 0
    watching: set[asyncio.Task[None]] = set()  # strong references: an unreferenced task can be collected
    queue: asyncio.Queue[tuple[bytes, str | None]] = asyncio.Queue()

    failures: list[str] = []

    async def poster() -> None:
        nonlocal errors
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while True:
            body, probe = await queue.get()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, int(port))
                reader, writer = connection
                writer.write(
                    b"POST /v1/responses HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                    + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                status, length = await read_head(reader)
                answer = await reader.readexactly(length)
                acked = time.perf_counter()
                if status != 202:
                    errors += 1
                    failures.append(f"{status} {answer[:200]!r}")
                elif probe is not None:
                    for w in where:
                        task = asyncio.get_running_loop().create_task(watch(w, probe, acked))
                        watching.add(task)
                        task.add_done_callback(watching.discard)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:  # counted; a new connection
                errors += 1
                failures.append(repr(exc))
                connection = None
            finally:
                queue.task_done()

    async def watch(w: Visible, probe: str, acked: float) -> None:
        w_host, w_port = w.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(w_host, int(w_port))
        try:
            while time.perf_counter() - acked < 10:
                # Every query API needs a key since issue 10: without it the probe read 401s.
                request = f"GET {w.path(probe)} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n"
                writer.write(request.encode())
                await writer.drain()
                status, length = await read_head(reader)
                answer = json.loads(await reader.readexactly(length))
                if w.seen(status, answer):
                    latencies[w.name].append(time.perf_counter() - acked)
                    return
                await asyncio.sleep(POLL_S)
        finally:
            writer.close()

    workers = [asyncio.create_task(poster()) for _ in range(connections)]
    sent = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            probe = uuid.uuid4().hex[:12] if sent % every == 0 else None
            attributes = {"product": random.choice(PRODUCTS), **({"probe": probe} if probe else {})}
            fields: dict[str, Any] = {"respondent_id": f"p{sent}", "score": sent % 11, "channel": "web"}
            if probe:  # found by its id in follow-up, and counted by themes (which count comments)
                fields |= {"response_id": f"probe-{probe}", "comment": "Delivery took almost three weeks."}
            queue.put_nowait((json.dumps({**fields, "attributes": attributes}).encode(), probe))
            sent += 1
        await asyncio.sleep(0.002)
    await queue.join()
    acked_s = time.perf_counter() - started
    for w in workers:
        w.cancel()
    if watching:
        await asyncio.wait(set(watching), timeout=15)  # each gives up after 10 s
    if failures:
        print(f"  {len(failures)} POSTs failed; the first: {failures[0]}", flush=True)
    probes = (sent + every - 1) // every
    return {
        name: _summary(sent, sorted(found), errors + probes - len(found), acked_s) for name, found in latencies.items()
    }


def _summary(sent: int, latencies: list[float], errors: int, acked_s: float) -> LatencyProbe:
    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return LatencyProbe(sent, pct(0.5), pct(0.99), 1000 * latencies[-1] if latencies else float("nan"), errors, acked_s)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    return status, length
