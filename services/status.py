"""`nps status`: the first thing an operator types. Each service's readiness (its /readyz and the
checks behind it), each consumer group's lag on the topics it reads, the outbox rows waiting to be
published per schema, the webhook deliveries pending, the alerts firing by rule, and the active
tickets by priority. Read-only: HTTP to the services, the broker's offsets, counts in PostgreSQL.
Exit 0 when every service is ready, 1 when one is not (or something could not be read)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import sqlalchemy as sa

from services.launcher import local_url
from shared.db import make_engine
from shared.kafka import group_lag
from shared.settings import ServiceSettings


@dataclass(frozen=True, slots=True)
class Group:
    service: str
    group: str
    topics: tuple[str, ...]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    healthy: bool = True

    def section(self, title: str) -> None:
        self.lines.append(f"\n{title}")

    def row(self, *cells: str) -> None:
        self.lines.append("  " + "  ".join(cells))


def readiness(settings: ServiceSettings, timeout_s: float = 2.0) -> tuple[bool, str]:
    url = f"{local_url(settings)}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True, f"ready      {url}"
    except urllib.error.HTTPError as exc:  # 503: not ready, with the checks that failed
        try:
            checks = json.loads(exc.read()).get("checks", {})
            failing = ", ".join(sorted(k for k, v in checks.items() if v != "ok")) or f"HTTP {exc.code}"
        except (ValueError, AttributeError):
            failing = f"HTTP {exc.code}"
        return False, f"NOT READY  {url}  ({failing})"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"DOWN       {url}  ({getattr(exc, 'reason', exc)})"


COUNTS = {
    "outbox rows waiting (per schema)": """
        SELECT 'scoring' AS k, count(*) AS n FROM scoring.outbox UNION ALL
        SELECT 'followup', count(*) FROM followup.outbox UNION ALL
        SELECT 'alerts', count(*) FROM alerts.outbox UNION ALL
        SELECT 'delivery', count(*) FROM delivery.outbox""",
    "webhook deliveries pending": "SELECT 'pending' AS k, count(*) AS n FROM delivery.deliveries WHERE status = 'pending'",
    "alerts firing (by rule)": """
        SELECT rule AS k, count(*) AS n FROM alerts.rule_states WHERE state IN ('firing', 'resolving') GROUP BY rule""",
    "tickets active (by priority)": """
        SELECT priority AS k, count(*) AS n FROM followup.tickets
        WHERE status IN ('open', 'in_progress', 'contacted') GROUP BY priority""",
}


async def counts(database_url: str) -> dict[str, dict[str, int]]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return {
                title: {str(r.k): int(r.n) for r in await conn.execute(sa.text(query))}
                for title, query in COUNTS.items()
            }
    finally:
        await engine.dispose()


def run(
    services: dict[str, ServiceSettings], groups: list[Group], database_url: str | None, bootstrap: str | None
) -> Report:
    report = Report()
    report.section("services")
    for name, settings in services.items():
        ready, text = readiness(settings)
        report.healthy &= ready
        report.row(f"{name:<9}", text)
    report.section("consumer lag (messages not yet committed)")
    if bootstrap is None:
        report.row("no broker known: set KAFKA_BOOTSTRAP_SERVERS (or run beside `nps up`)")
        report.healthy = False
    else:
        for group in groups:
            try:
                found = asyncio.run(group_lag(bootstrap, group.group, group.topics))
            except Exception as exc:  # the broker away: say so, go on
                report.row(f"{group.service:<9}", f"{group.group}: cannot read ({type(exc).__name__}: {exc})")
                report.healthy = False
                continue
            per_topic = ", ".join(f"{topic} {n:,}" for topic, n in found.items())
            report.row(f"{group.service:<9}", f"{group.group}: {sum(found.values()):,}  ({per_topic})")
    if database_url is None:
        report.section("database")
        report.row("no database known: set DATABASE_URL (or run beside `nps up`)")
        report.healthy = False
        return report
    try:
        found_counts = asyncio.run(counts(database_url))
    except Exception as exc:
        report.section("database")
        report.row(f"cannot read: {type(exc).__name__}: {exc}")
        report.healthy = False
        return report
    for title, values in found_counts.items():
        report.section(title)
        if not values or not any(values.values()):
            report.row("none")
        for key, n in sorted(values.items()):
            if n:
                report.row(f"{key:<9}", f"{n:,}")
    return report
