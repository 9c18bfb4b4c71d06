"""The follow-up benchmark: the scoring benchmark's backlog (submissions, retried duplicates and
revisions, a quarter as many people as responses, so people answer again, join tickets and meet
the contact rules) consumed by `nps followup` with the default policy, pinned to core 0, against
a raw read of the same topic."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BENCH_SECRET, catch_up, machine, start_service, verdict, write_section
from bench.profile import Profiler
from bench.scoring import backlog, fill, run_raw
from services.embedded import free_port
from services.infra import pin, private_infrastructure

TARGET = 10_000


@dataclass
class FollowUpResult:
    events: int
    raw_s: float
    service_events: int
    service_s: float

    @property
    def raw_rate(self) -> float:
        return self.events / self.raw_s

    @property
    def service_rate(self) -> float:
        return self.service_events / self.service_s


def bench_followup(n: int, profile_dir: Path | None = None) -> FollowUpResult:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-followup-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            pin(infra.pids, 1)
            bootstrap, topics = infra.bootstrap, infra.topics
            print(f"follow-up benchmark: producing a backlog of {n:,} events", flush=True)
            asyncio.run(fill(bootstrap, topics.responses, backlog(n, seed=2)))
            raw_s = run_raw(bootstrap, topics.responses, n)
            print(f"  raw consume  {n / raw_s:>9,.0f} events/s", flush=True)
            group = "bench-followup"
            env = {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "NPS_TOPIC_NAMESPACE": "bench",
                "NPS_FOLLOWUP_GROUP_ID": group,
                "NPS_FOLLOWUP_PORT": str(free_port()),
                "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
                "NPS_LOG_LEVEL": "WARNING",
            }
            log = work / "followup.log"
            followup = start_service("followup", env, log, cpu="0")
            children.append(followup)
            profiler = Profiler(followup.pid, profile_dir) if profile_dir is not None else None
            spy = profiler.start("followup", 30) if profiler is not None else None
            events, seconds = catch_up("follow-up", bootstrap, group, topics.responses, n, log, 900)
            if spy is not None and profiler is not None:
                spy.wait(60)
                print(profiler.summary("followup", 30), flush=True)
            result = FollowUpResult(n, raw_s, events, seconds)
            print(f"  follow-up    {result.service_rate:>9,.0f} events/s (routed and committed)", flush=True)
            followup.terminate()
            followup.wait(30)
            return result
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)


def write_followup_report(result: FollowUpResult) -> Path:
    lines = [
        "## Follow-up",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        f"- **Setup:** the scoring backlog ({result.events:,} events; a quarter as many people as responses, so "
        "people answer again, join their active ticket and meet the contact rules), the default policy with its "
        "messages rendered, `nps followup` pinned to core 0; PostgreSQL, the broker and the bench's progress polling on "
        "core 1.",
        "",
        "| run | events/s | ratio to raw consume | target | met |",
        "|---|---|---|---|---|",
        f"| raw consume (aiokafka, no decoding, no database) | {result.raw_rate:,.0f} | 1.00 | ceiling | |",
        f"| `nps followup`: routed (policy, contact rules, tickets, messages), committed | {result.service_rate:,.0f} | "
        f"{result.service_rate / result.raw_rate:.2f} | ≥ {TARGET:,}/s | {verdict(result.service_rate >= TARGET)} |",
        "",
    ]
    return write_section("followup", lines)
