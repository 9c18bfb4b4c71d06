"""The themes benchmark: the scoring benchmark's backlog, 60% of submissions with a comment drawn
from the labelled evaluation set, consumed by `nps themes` (tagging, exact theme counts) pinned to
core 0, against a raw read of the same topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, machine, write_section
from bench.consumers import ConsumerResult, run_consumer
from bench.scoring import backlog

COMMENTS = ROOT / "tests" / "data" / "themes_eval.jsonl"


def bench_themes(n: int) -> ConsumerResult:
    comments = [json.loads(line)["comment"] for line in COMMENTS.read_text().splitlines()]
    return run_consumer("themes", backlog(n, seed=3, comments=comments), "tagged, counted, committed")


def write_themes_report(result: ConsumerResult) -> Path:
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
