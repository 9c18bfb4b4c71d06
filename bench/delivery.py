"""The delivery benchmark: `nps delivery` on core 0 sends a backlog of TicketOpened events to a local
receiver (its own process, with the infrastructure on core 1) over keep-alive connections; then,
with a second subscription whose endpoint never answers, events published at a steady rate are
timed from publication to arrival at the healthy endpoint."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import BENCH_SECRET, BENCH_SECRETS_KEY, machine, pinned, start_service, verdict, write_section
from bench.profile import Profiler
from bench.scoring import fill
from delivery_service import subscriptions
from delivery_service.subscriptions import NewSubscription
from services.embedded import free_port
from services.infra import pin, private_infrastructure
from shared.db import make_engine
from shared.events import TicketOpened
from shared.sealed import Sealer

TARGET_RATE = 1_000
TARGET_P99_S = 1.0


@dataclass
class DeliveryResult:
    events: int
    seconds: float
    distinct: int
    steady_rate: float
    steady_events: int
    latencies: list[float]
    hanging_attempts: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ticket(i: int, at: datetime) -> TicketOpened:
    return TicketOpened(
        ticket_id=f"tk_{i:032x}", response_id=f"bench-{i}", respondent_id=f"person-{i}", score=i % 7,
        comment="the checkout page keeps timing out", channel="web", answered_at=at, created_at=at,
    )  # fmt: skip


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as reply:
        found: dict[str, Any] = json.loads(reply.read())
        return found


def wait_for(port: int, n: int, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        found = stats(port)
        if found["distinct"] >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


async def subscribe(url: str, endpoint: str) -> None:
    engine = make_engine(url)
    try:
        await subscriptions.create(
            engine,
            Sealer.of(BENCH_SECRETS_KEY),
            NewSubscription.model_validate({"url": endpoint, "events": ["TicketOpened"]}),
            True,
            "bench",
        )
    finally:
        await engine.dispose()


async def steady(bootstrap: str, topic: str, rate: int, seconds: int, first: int) -> int:
    """Publish `rate` events a second for `seconds`, each stamped with its publication time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    sent = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            for _ in range(rate // 10):
                event = ticket(first + sent, datetime.now(UTC))
                await producer.send(topic, value=event.to_bytes(), key=event.respondent_id.encode())
                sent += 1
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def bench_delivery(
    n: int = 20_000, seconds: int = 20, rate: int = 200, profile_dir: Path | None = None
) -> DeliveryResult:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-delivery-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            pin(infra.pids, 1)
            port = free_port()
            receiver = subprocess.Popen(
                pinned([sys.executable, "-m", "bench.receiver", str(port)], "1"),
                stdout=(work / "receiver.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            children.append(receiver)
            for _ in range(100):
                try:
                    stats(port)
                    break
                except OSError:
                    time.sleep(0.1)
            asyncio.run(subscribe(infra.database_url, f"http://127.0.0.1:{port}/ok"))
            print(f"delivery benchmark: a backlog of {n:,} TicketOpened events", flush=True)
            at = datetime.now(UTC)
            events = [ticket(i, at) for i in range(n)]
            asyncio.run(
                fill(infra.bootstrap, infra.topics.tickets, [(e.respondent_id.encode(), e.to_bytes()) for e in events])
            )
            env = {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
                "NPS_TOPIC_NAMESPACE": "bench",
                "NPS_DELIVERY_PORT": str(free_port()),
                "NPS_DELIVERY_ALLOW_PRIVATE_URLS": "true",
                "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
                "NPS_SECRETS_KEY": BENCH_SECRETS_KEY,
                "NPS_LOG_LEVEL": "WARNING",
            }
            delivery = start_service("delivery", env, work / "delivery.log", cpu="0")
            children.append(delivery)
            profiler = Profiler(delivery.pid, profile_dir) if profile_dir is not None else None
            spy = profiler.start("delivery", 15) if profiler is not None else None
            done = wait_for(port, n, 600)
            if spy is not None and profiler is not None:
                spy.wait(60)
                print(profiler.summary("delivery", 15), flush=True)
            elapsed = (done["last"] - done["first"]) or float("nan")
            print(f"  backlog      {done['distinct'] / elapsed:>9,.0f} deliveries/s", flush=True)

            # A second subscriber whose endpoint never answers; events now arrive at a steady rate.
            asyncio.run(subscribe(infra.database_url, f"http://127.0.0.1:{port}/hang"))
            time.sleep(2)  # both the consumer's next batch and the worker's refresh see it
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/reset", method="POST"), timeout=10)
            sent = asyncio.run(steady(infra.bootstrap, infra.topics.tickets, rate, seconds, n))
            timed = wait_for(port, sent, 60)
            result = DeliveryResult(
                done["distinct"],
                elapsed,
                done["distinct"],
                rate,
                timed["distinct"],
                timed["latencies"],
                timed["hanging"],
            )
            print(
                f"  steady {rate}/s beside a hanging endpoint: p50 {result.quantile(0.5) * 1000:.0f} ms, "
                f"p99 {result.quantile(0.99) * 1000:.0f} ms ({timed['distinct']:,} of {sent:,})",
                flush=True,
            )
            return result
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
        shutil.rmtree(work, ignore_errors=True)


def write_delivery_report(result: DeliveryResult) -> Path:
    p99 = result.quantile(0.99)
    lines = [
        "## Delivery (webhooks)",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        "- **Setup:** `nps delivery` (default settings: 16 attempts in flight per subscription, keep-alive) pinned "
        "to core 0; PostgreSQL, the broker and the receiver (aiohttp, its own process, answering 200 at once) on "
        "core 1. Each delivery is signed, and recorded with its attempt in PostgreSQL.",
        "",
        "| run | result | target | met |",
        "|---|---|---|---|",
        f"| a backlog of {result.events:,} TicketOpened to one endpoint | {result.rate:,.0f} deliveries/s | "
        f"≥ {TARGET_RATE:,}/s | {verdict(result.rate >= TARGET_RATE)} |",
        f"| {result.steady_rate:.0f} events/s for a healthy endpoint while another hangs "
        f"({result.hanging_attempts} attempts hung): published -> delivered | p50 {result.quantile(0.5) * 1000:,.0f} ms, "
        f"p99 {p99 * 1000:,.0f} ms ({result.steady_events:,} events) | p99 < {TARGET_P99_S:.0f} s | "
        f"{verdict(p99 < TARGET_P99_S)} |",
        "",
    ]
    return write_section("delivery", lines)
