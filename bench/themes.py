"""The themes benchmark: the scoring benchmark's backlog, 60% of submissions with a comment drawn
from the labelled evaluation set, consumed by `nps themes` (tagging, exact theme counts) pinned to
core 0, against a raw read of the same topic."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bench.common import ROOT, machine, write_section
from bench.consumers import ConsumerResult, run_consumer
from bench.scoring import backlog
from scoring_service.domain import Dimensions
from shared.db import make_engine
from shared.windows import MAX_WINDOW_DAYS
from tests.data.suggest_corpus import corpus
from themes_service import suggest
from themes_service.repository import THEMES
from themes_service.taxonomy import load_taxonomy

COMMENTS = ROOT / "tests" / "data" / "themes_eval.jsonl"


@dataclass
class SuggestResult:
    corpus: int = 0  # comments of the synthetic stream (tests/data/suggest_corpus.py)
    corpus_s: float = 0.0  # discovery over them, in memory
    found: list[str] = field(default_factory=list)  # its first three candidates
    stored: int = 0  # comments the themes run kept in PostgreSQL
    stored_s: float = 0.0  # the whole `nps themes suggest` over them: read, tag, discover, print


def bench_themes(n: int) -> tuple[ConsumerResult, SuggestResult]:
    comments = [json.loads(line)["comment"] for line in COMMENTS.read_text().splitlines()]
    suggested = SuggestResult()

    def suggest_over_the_run(database_url: str) -> None:
        request = suggest.Request(window=f"{MAX_WINDOW_DAYS}d", output="yaml")
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            asyncio.run(suggest.run(database_url, request, Dimensions()))
        suggested.stored_s = time.perf_counter() - started
        suggested.stored = asyncio.run(_count_comments(database_url))

    result = run_consumer(
        "themes", backlog(n, seed=3, comments=comments), "tagged, counted, committed", then=suggest_over_the_run
    )
    stream, _ = corpus(100_000)
    started = time.perf_counter()
    found = suggest.discover(stream, load_taxonomy())
    suggested.corpus, suggested.corpus_s = len(stream), time.perf_counter() - started
    suggested.found = [c.key for c in found.candidates[:3]]
    print(
        f"  suggest      {suggested.corpus:,} comments in {suggested.corpus_s:.1f}s; the run's "
        f"{suggested.stored:,} stored comments, whole command, in {suggested.stored_s:.1f}s",
        flush=True,
    )
    return result, suggested


async def _count_comments(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            table = f"{THEMES.schema}.{THEMES.comments}"
            return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())
    finally:
        await engine.dispose()


def write_themes_report(result: ConsumerResult, suggested: SuggestResult) -> Path:
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
        "`nps themes suggest` (target: under 30 s over 100,000 comments), on the same machine:",
        "",
        "| run | comments | seconds |",
        "|---|---|---|",
        f"| discovery over the synthetic stream of tests/data/suggest_corpus.py (in memory; first three candidates: "
        f"{', '.join(suggested.found)}) | {suggested.corpus:,} | {suggested.corpus_s:.1f} |",
        f"| the whole command over the comments the run above kept (read from PostgreSQL, tagged, discovered, "
        f"printed as YAML) | {suggested.stored:,} | {suggested.stored_s:.1f} |",
        "",
    ]
    return write_section("themes", lines)
