"""The themes benchmark: the scoring benchmark's backlog, 60% of submissions with a comment drawn
from the labelled evaluation set, consumed by `nps themes` (tagging, exact theme counts) pinned to
core 0, against a raw read of the same topic."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BENCH_SECRET, ROOT, catch_up, machine, start_service, write_section
from bench.scoring import backlog, fill, run_raw
from services.embedded import free_port
from services.infra import pin, private_infrastructure

COMMENTS = ROOT / "tests" / "data" / "themes_eval.jsonl"


@dataclass
class ThemesResult:
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


def bench_themes(n: int) -> ThemesResult:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-themes-"))
    children: list[subprocess.Popen[bytes]] = []
    comments = [json.loads(line)["comment"] for line in COMMENTS.read_text().splitlines()]
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            pin(infra.pids, 1)
            bootstrap, topics = infra.bootstrap, infra.topics
            print(f"themes benchmark: producing a backlog of {n:,} events", flush=True)
            asyncio.run(fill(bootstrap, topics.responses, backlog(n, seed=3, comments=comments)))
            raw_s = run_raw(bootstrap, topics.responses, n)
            print(f"  raw consume  {n / raw_s:>9,.0f} events/s", flush=True)
            group = "bench-themes"
            env = {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "NPS_TOPIC_NAMESPACE": "bench",
                "NPS_THEMES_GROUP_ID": group,
                "NPS_THEMES_PORT": str(free_port()),
                "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
                "NPS_LOG_LEVEL": "WARNING",
            }
            log = work / "themes.log"
            themes = start_service("themes", env, log, cpu="0")
            children.append(themes)
            events, seconds = catch_up("themes", bootstrap, group, topics.responses, n, log, 900)
            result = ThemesResult(n, raw_s, events, seconds)
            print(f"  themes       {result.service_rate:>9,.0f} events/s (tagged, counted, committed)", flush=True)
            themes.terminate()
            themes.wait(30)
            return result
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)


def write_themes_report(result: ThemesResult) -> Path:
    lines = [
        "## Themes",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        f"- **Setup:** the scoring backlog ({result.events:,} events), 60% of submissions with a comment from "
        "tests/data/themes_eval.jsonl, the default taxonomy (two languages); `nps themes` pinned to core 0; "
        "PostgreSQL, the broker and the bench's progress polling on core 1. No target of its own: it is its own "
        "consumer group so that scoring keeps its bar (docs/themes.md).",
        "",
        "| run | events/s | ratio to raw consume |",
        "|---|---|---|",
        f"| raw consume (aiokafka, no decoding, no database) | {result.raw_rate:,.0f} | 1.00 |",
        f"| `nps themes`: tagged, counted per theme and segment exactly, committed | {result.service_rate:,.0f} | "
        f"{result.service_rate / result.raw_rate:.2f} |",
        "",
    ]
    return write_section("themes", lines)
