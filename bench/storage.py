"""The storage benchmark: what each schema holds per million responses.

N distinct responses (90 days of answers, ~5 segments each, 60% with a comment from the labelled
set, a quarter as many people) are POSTed through ingest in batches of 1,000; scoring, themes and
follow-up consume them with their defaults; then every table of every schema is measured
(pg_total_relation_size: rows, indexes and TOAST) and scaled to a million responses. Daily rows grow
with segments x days, not with responses: their figure holds for this mix of segments and days."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.common import BENCH_SECRET, ROOT, catch_up, machine, start_service, write_section
from bench.latency import PRODUCTS
from bench.scoring import CHANNELS, PLANS, REGIONS
from services.embedded import free_port
from services.infra import create_api_key, private_infrastructure
from shared.db import make_engine

SCHEMAS = ("ingest", "scoring", "themes", "followup")
CONSUMERS = {"scoring": "bench-scoring", "themes": "bench-themes", "followup": "bench-followup"}
COMMENTS = ROOT / "tests" / "data" / "themes_eval.jsonl"


@dataclass(frozen=True)
class Table:
    name: str
    rows: int
    size: int  # bytes, indexes and TOAST included


@dataclass(frozen=True)
class StorageResult:
    responses: int
    tables: list[Table]


def bodies(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    comments = [json.loads(line)["comment"] for line in COMMENTS.read_text().splitlines()]
    now = datetime.now(UTC)
    return [
        {
            "response_id": f"store-{i}",
            "respondent_id": f"person-{rng.randrange(n // 4 + 1)}",
            "score": rng.randint(0, 10),
            "channel": rng.choice(CHANNELS),
            "answered_at": (now - timedelta(days=rng.randrange(90), seconds=rng.randrange(86_400))).isoformat(),
            "attributes": {"product": rng.choice(PRODUCTS), "region": rng.choice(REGIONS), "plan": rng.choice(PLANS)},
            **({"comment": rng.choice(comments)} if rng.random() < 0.6 else {}),
        }
        for i in range(n)
    ]


async def post_all(url: str, key: str, items: list[dict[str, object]]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60) as client:
        for start in range(0, len(items), 1_000):
            answer = await client.post(
                f"{url}/v1/responses/batch", json={"responses": items[start : start + 1_000]}, headers=headers
            )
            answer.raise_for_status()
            if {r["status"] for r in answer.json()["results"]} != {"accepted"}:
                raise RuntimeError(f"not all accepted: {answer.text[:500]}")


async def measure(database_url: str) -> list[Table]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            names = await conn.execute(
                sa.text(
                    "SELECT schemaname, relname FROM pg_stat_user_tables "
                    "WHERE schemaname = ANY(CAST(:schemas AS text[])) ORDER BY schemaname, relname"
                ),
                {"schemas": list(SCHEMAS)},
            )
            tables = []
            for schema, name in names.all():
                qualified = f'"{schema}"."{name}"'
                rows = await conn.scalar(sa.text(f"SELECT count(*) FROM {qualified}"))
                size = await conn.scalar(
                    sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": qualified}
                )
                if rows:
                    tables.append(Table(f"{schema}.{name}", int(rows), int(size or 0)))
            return tables
    finally:
        await engine.dispose()


def bench_storage(n: int) -> StorageResult:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-storage-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            key = asyncio.run(create_api_key(infra.database_url, "bench"))
            env = {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
                "NPS_TOPIC_NAMESPACE": "bench",
                "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
                "NPS_LOG_LEVEL": "WARNING",
                "NPS_INGEST_RATE_LIMIT_PER_S": "0",
                "NPS_SCORING_MAX_VALUES_PER_DIMENSION": "100000",
                "NPS_THEMES_MAX_VALUES_PER_DIMENSION": "100000",  # the same segments as scoring's
            }
            ingest_port = free_port()
            for service in ("ingest", *CONSUMERS):
                prefix = f"NPS_{service.upper()}"
                extra = {f"{prefix}_PORT": str(ingest_port if service == "ingest" else free_port())}
                if service in CONSUMERS:
                    extra[f"{prefix}_GROUP_ID"] = CONSUMERS[service]
                children.append(start_service(service, {**env, **extra}, work / f"{service}.log"))
            print(f"storage benchmark: posting {n:,} responses through ingest", flush=True)
            asyncio.run(post_all(f"http://127.0.0.1:{ingest_port}", key, bodies(n)))
            for service, group in CONSUMERS.items():
                catch_up(service, infra.bootstrap, group, infra.topics.responses, n, work / f"{service}.log", 900, None)
            tables = asyncio.run(measure(infra.database_url))
            for child in children:
                child.terminate()
                child.wait(30)
            return StorageResult(n, tables)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)


def write_storage_report(result: StorageResult) -> Path:
    per_million = 1_000_000 / result.responses
    lines = [
        "## Storage per million responses",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}: {result.responses:,} distinct responses through",
        "ingest, scoring, themes and follow-up with their defaults (90 days of answers, ~5 segments each, 60% with",
        "a comment); each table's size includes its indexes, TOAST and the dead rows autovacuum has not reclaimed yet,",
        "scaled linearly to a million responses. The daily tables (`daily_counts`, `theme_daily`) grow with segments",
        "x days, not with responses: their line holds for this mix only (32 segments over 90 days). Tables under",
        "0.1 MB are left out.",
        "",
        "| table | rows | MB now | bytes per response | GB per million responses |",
        "|---|---|---|---|---|",
    ]
    by_schema: dict[str, int] = {}
    for table in sorted(result.tables, key=lambda t: -t.size):
        schema = table.name.split(".", 1)[0]
        by_schema[schema] = by_schema.get(schema, 0) + table.size
        if table.size < 100_000:
            continue
        lines.append(
            f"| {table.name} | {table.rows:,} | {table.size / 1e6:,.1f} | {table.size / result.responses:,.0f} | "
            f"{table.size * per_million / 1e9:,.2f} |"
        )
    total = sum(by_schema.values())
    lines += [
        "",
        "| schema | GB per million responses |",
        "|---|---|",
        *(f"| {schema} | {size * per_million / 1e9:,.2f} |" for schema, size in sorted(by_schema.items())),
        f"| **all** | **{total * per_million / 1e9:,.2f}** |",
        "",
    ]
    return write_section("storage", lines)
