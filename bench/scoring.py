"""The scoring benchmark: a backlog on the responses topic, consumed three ways on core 0.

  raw      a plain aiokafka consumer reading the topic (no decoding, no database): the ceiling
  service  `nps scoring` (the consumer loop, the batch handler, PostgreSQL, offset commits)
  replay   `nps scoring rebuild --replay` into an empty database (the rebuild from the log)

then the end-to-end latency: ingest and scoring running, 1,000 POSTs/s, and the time from a probe
POST's 202 to its score being visible in GET /v1/nps.

`python -m bench.scoring raw BOOTSTRAP TOPIC N` is the raw reader, run pinned by the bench."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import ResponseRevised, ResponseSubmitted

PRODUCTS = [f"product-{i}" for i in range(20)]
REGIONS = ["eu", "us", "apac", "latam", "mea"]
PLANS = ["free", "pro", "enterprise"]
CHANNELS = ["web", "email", "sms", "mobile"]


def backlog(n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """n events as ingest publishes them: ~94% submissions, 3% retried duplicates, 3% revisions,
    over 90 days, ~5 segments each, keyed by respondent."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out: list[tuple[bytes, bytes]] = []
    submitted: list[ResponseSubmitted] = []
    for i in range(n):
        roll = rng.random()
        if submitted and roll < 0.03:
            e = rng.choice(submitted)
            out.append((e.respondent_id.encode(), e.to_bytes()))
            continue
        if submitted and roll < 0.06:
            base = rng.choice(submitted)
            revised = ResponseRevised(
                response_id=base.response_id,
                respondent_id=base.respondent_id,
                version=2,
                score=rng.randint(0, 10),
                channel=base.channel,
                answered_at=base.answered_at,
                attributes=base.attributes,
                revised_at=now,
            )
            out.append((revised.respondent_id.encode(), revised.to_bytes()))
            continue
        e = ResponseSubmitted(
            response_id=f"bench-{i}",
            respondent_id=f"person-{rng.randrange(n // 4 + 1)}",
            score=rng.randint(0, 10),
            channel=rng.choice(CHANNELS),
            answered_at=now - timedelta(days=rng.randrange(90), seconds=rng.randrange(86_400)),
            attributes={"product": rng.choice(PRODUCTS), "region": rng.choice(REGIONS), "plan": rng.choice(PLANS)},
            submitted_at=now,
        )
        submitted.append(e)
        out.append((e.respondent_id.encode(), e.to_bytes()))
    return out


async def fill(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=20)
    await producer.start()
    try:
        for start in range(0, len(events), 10_000):
            sent = [await producer.send(topic, value=v, key=k) for k, v in events[start : start + 10_000]]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def raw_read(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds to read `expected` records from the start of the topic (first record to last)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started: float | None = None
        while seen < expected:
            records = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and records:
                started = time.perf_counter()
            seen += sum(len(batch) for batch in records.values())
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


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
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                await writer.drain()
                _, length = await read_head(reader)
                if json.loads(await reader.readexactly(length))["n"] == 1:
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


def pinned(command: list[str], cpu: str = "0") -> list[str]:
    import shutil

    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") else command


def run_raw(bootstrap: str, topic: str, expected: int) -> float:
    out = subprocess.run(
        pinned([sys.executable, "-m", "bench.scoring", "raw", bootstrap, topic, str(expected)]),
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    return float(out.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1:2] == ["raw"]:
        print(asyncio.run(raw_read(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
