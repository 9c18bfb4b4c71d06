"""Retention (NPS_SCORING_RETENTION_DAYS, NPS_THEMES_RETENTION_DAYS): `nps scoring prune` and `nps
themes prune` delete each service's counts
of days before the cutoff, the counts kept still equal a recompute, and once it is set the consumers
ignore whatever arrives for a day before the cutoff (a late revision cannot bring a day back)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from scoring_service.bootstrap import spec as scoring_spec
from scoring_service.settings import ScoringSettings
from shared.db import make_engine
from shared.events import RespondentErased, ResponseRevised, ResponseSubmitted
from tests.helpers import (
    clear_of_midnight,
    create_topics,
    eventually,
    keyed,
    nps_env,
    nps_here,
    produce,
    running_loop,
    service_settings,
    submitted_event,
)
from tests.helpers import started_producer as producer_on
from themes_service.bootstrap import spec as themes_spec
from themes_service.settings import ThemesSettings

pytestmark = pytest.mark.integration

KEEP = 90  # the shortest retention the default windows allow (90d)


def answer(now: datetime, rid: str, score: int, days_ago: int, comment: str | None = None) -> ResponseSubmitted:
    return submitted_event(rid, score, now, days_ago, "web", comment)


async def rows_before_cutoff(database_url: str, cutoff: date) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = {}
            for table in ("scoring.responses", "scoring.daily_counts", "themes.theme_responses", "themes.theme_daily"):
                found[table.split(".")[1]] = int(
                    await conn.scalar(sa.text(f"SELECT count(*) FROM {table} WHERE day < :c"), {"c": cutoff}) or 0
                )
            found["theme_comments"] = int(
                await conn.scalar(sa.text("SELECT count(*) FROM themes.theme_comments WHERE response_id LIKE 'old-%'"))
                or 0
            )
            return found
    finally:
        await engine.dispose()


async def counts_of(database_url: str) -> tuple[int, int, int]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT sum(promoters) AS p, sum(passives) AS pa, sum(detractors) AS d "
                        "FROM scoring.daily_counts WHERE segment = 'all'"
                    )
                )
            ).one()
            return int(row.p or 0), int(row.pa or 0), int(row.d or 0)
    finally:
        await engine.dispose()


async def consume(settings: ScoringSettings, themes: ThemesSettings, n: int) -> None:
    for wiring in (scoring_spec(settings), themes_spec(themes)):
        async with running_loop(settings if wiring.service == "scoring" else themes, wiring) as run:
            await eventually(run.committed_at_least(n))


async def test_prune_deletes_what_is_older_than_the_retention_and_late_events_stay_out(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    scoring = service_settings(bootstrap, database_url, namespace, ScoringSettings, group_id="prune-scoring")
    themes = service_settings(bootstrap, database_url, namespace, ThemesSettings, group_id="prune-themes")
    await create_topics(scoring)
    # The `nps` commands below read the real clock: the days here are counted back from the same day.
    now = await clear_of_midnight(240)
    cutoff = now.date() - timedelta(days=KEEP - 1)
    first = [
        answer(now, "old-1", 2, 120, "delivery was late"),
        answer(now, "old-2", 10, KEEP),  # the day before the cutoff
        answer(now, "edge-1", 9, KEEP - 1, "fast shipping"),  # the cutoff day itself: kept
        answer(now, "new-1", 0, 3, "the app crashes"),
        answer(now, "new-2", 8, 1),
    ]
    async with producer_on(bootstrap) as producer:
        await produce(producer, scoring.topics.responses, keyed(first))
    await consume(scoring, themes, len(first))  # no retention yet: all counted
    assert await counts_of(database_url) == (2, 1, 2)
    assert (await rows_before_cutoff(database_url, cutoff))["responses"] == 2

    env = nps_env(DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, NPS_TOPIC_NAMESPACE=namespace)
    refused = nps_here("scoring", "prune", env=env)
    assert refused.returncode == 2 and "NPS_SCORING_RETENTION_DAYS" in refused.stderr
    short = nps_here("scoring", "prune", env={**env, "NPS_SCORING_RETENTION_DAYS": "30"})
    assert short.returncode == 2 and "shorter than the 90 days" in short.stderr
    env["NPS_SCORING_RETENTION_DAYS"] = str(KEEP)
    dry = nps_here("scoring", "prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"scoring: would delete 2 responses, 4 daily rows answered before {cutoff}" in dry.stdout
    assert (await rows_before_cutoff(database_url, cutoff))["responses"] == 2  # a dry run deletes nothing
    pruned = nps_here("scoring", "prune", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "scoring: deleted 2 responses, 4 daily rows" in pruned.stdout and "themes" not in pruned.stdout
    left = await rows_before_cutoff(database_url, cutoff)
    assert left["responses"] == left["daily_counts"] == 0 and left["theme_responses"] == 2  # themes' are its own
    without = {k: v for k, v in env.items() if k != "NPS_SCORING_RETENTION_DAYS"}
    refused = nps_here("themes", "prune", env=without)
    assert refused.returncode == 2 and "NPS_THEMES_RETENTION_DAYS is not set" in refused.stderr
    pruned = nps_here("themes", "prune", env=env)  # scoring's old name, still read for one release
    assert pruned.returncode == 0, pruned.stderr
    assert "set NPS_THEMES_RETENTION_DAYS instead" in pruned.stderr
    assert "themes: deleted 2 responses" in pruned.stdout and "1 kept comments" in pruned.stdout
    assert await rows_before_cutoff(database_url, cutoff) == dict.fromkeys(
        ("responses", "daily_counts", "theme_responses", "theme_daily", "theme_comments"), 0
    )
    assert await counts_of(database_url) == (1, 1, 1)  # edge-1, new-2, new-1
    for store in ("scoring", "themes"):  # what is kept still equals a recompute from the responses kept
        checked = nps_here(store, "rebuild", "--check", env=env)
        assert checked.returncode == 0 and "0 differ" in checked.stdout, checked.stdout + checked.stderr

    # With the retention set, the services ignore what arrives for a day before the cutoff.
    scoring = scoring.model_copy(update={"retention_days": KEEP})
    themes = themes.model_copy(update={"retention_days": KEEP})
    late = [
        ResponseRevised(
            response_id="old-1",
            respondent_id="u-old-1",
            version=2,
            score=10,
            channel="web",
            answered_at=first[0].answered_at,
            revised_at=now,
        ),
        answer(now, "old-3", 0, 200),
        RespondentErased(erasure_id="e-1", respondent_id="u-new-1", requested_at=now),
    ]
    expired_before = REGISTRY.get_sample_value("nps_scoring_events_total", {"outcome": "expired"}) or 0
    async with producer_on(bootstrap) as producer:
        await produce(producer, scoring.topics.responses, keyed(late))
    await consume(scoring, themes, len(first) + len(late))
    assert await counts_of(database_url) == (1, 1, 0)  # the erasure counted; the late old ones did not
    assert (await rows_before_cutoff(database_url, cutoff))["responses"] == 0
    expired = (REGISTRY.get_sample_value("nps_scoring_events_total", {"outcome": "expired"}) or 0) - expired_before
    assert expired == 4  # two late versions, seen by scoring and by themes
    checked = nps_here("scoring", "rebuild", "--check", env=env)
    assert checked.returncode == 0 and "0 differ" in checked.stdout, checked.stdout
