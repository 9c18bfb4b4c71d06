"""The follow-up benchmark: the scoring benchmark's backlog (submissions, retried duplicates and
revisions, a quarter as many people as responses, so people answer again, join tickets and meet
the contact rules) consumed by `nps followup` with the default policy, pinned to core 0, against
a raw read of the same topic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine, verdict, write_section
from bench.consumers import ConsumerResult, run_consumer
from bench.scoring import backlog

TARGET = 10_000


def bench_followup(n: int, profile_dir: Path | None = None) -> ConsumerResult:
    return run_consumer("followup", backlog(n, seed=2), "routed and committed", profile_dir)


def write_followup_report(result: ConsumerResult) -> Path:
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
