"""Themes through the real consumer, broker and database: theme counts equal a recompute from the
events after duplicates, redelivery, a revision that changes the comment, and an erasure; and the
themes API answers from them."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from alerts_service.drivers import ThemeDrivers, describe
from scoring_service.domain import Dimensions, SegmentPlan, Version, segments_of
from services.cli import main
from shared.db import make_engine
from shared.events import RespondentErased, ResponseRevised, ResponseSubmitted
from shared.nps import Counts, classify
from tests import scoring_model
from tests.conftest import fresh_database
from tests.helpers import (
    create_topics,
    eventually,
    keyed,
    nps_env,
    nps_here,
    produce,
    running_loop,
    serve_in_process,
    service_settings,
    started_producer,
    truncate,
)
from tests.scale import examples
from themes_service import suggest
from themes_service.bootstrap import create_app, spec
from themes_service.settings import ThemesSettings
from themes_service.taxonomy import load_taxonomy, theme_keys

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
TODAY = NOW.date()


def pinned() -> datetime:
    """The consumers' and APIs' clock: the day of the events built here, even once midnight has passed."""
    return NOW


TAXONOMY = load_taxonomy()


def submitted(
    rid: str, score: int, comment: str | None, days_ago: int = 0, person: str | None = None
) -> ResponseSubmitted:
    return ResponseSubmitted(
        response_id=rid,
        respondent_id=person or f"u-{rid}",
        score=score,
        comment=comment,
        channel="web",
        answered_at=NOW - timedelta(days=days_ago),
        submitted_at=NOW,
    )


def expected(events: list[Any]) -> dict[tuple[str, date], Counts]:
    """From scratch: each response's newest version, unless its respondent asked for erasure after
    it was first seen; counted under `<theme>@<segment>` for its comment's themes."""
    newest: dict[str, ResponseSubmitted | ResponseRevised] = {}
    first: dict[str, datetime] = {}
    erased_at: dict[str, datetime] = {}
    for e in events:
        if isinstance(e, RespondentErased):
            erased_at[e.respondent_id] = max(e.requested_at, erased_at.get(e.respondent_id, e.requested_at))
            continue
        at = e.submitted_at if isinstance(e, ResponseSubmitted) else e.revised_at
        first[e.response_id] = min(at, first.get(e.response_id, at))
        version = 1 if isinstance(e, ResponseSubmitted) else e.version
        held = newest.get(e.response_id)
        if held is None or version > (1 if isinstance(held, ResponseSubmitted) else held.version):
            newest[e.response_id] = e
    dims = Dimensions.parse("channel,survey_id,*", "")
    plan = SegmentPlan(set(), {}, 1_000)
    out: dict[tuple[str, date], Counts] = defaultdict(Counts)
    for rid, e in newest.items():
        if e.respondent_id in erased_at and erased_at[e.respondent_id] >= first[rid]:
            continue
        version = Version(
            rid, "k", 1, e.score, e.answered_at.astimezone(UTC).date(), e.channel, e.survey_id, e.attributes, NOW
        )
        keys = theme_keys(
            segments_of(version, dims, plan), TAXONOMY.tag(e.comment), bool(e.comment and e.comment.strip())
        )
        for key in keys:
            out[(key, version.day)] += Counts.of(classify(e.score))
    return dict(out)


async def stored(database_url: str) -> dict[tuple[str, date], Counts]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT * FROM themes.theme_daily"))
            return {
                (r.segment, r.day): Counts(r.promoters, r.passives, r.detractors)
                for r in rows
                if r.promoters or r.passives or r.detractors
            }
    finally:
        await engine.dispose()


async def test_theme_counts_equal_a_recompute_and_the_api_reads_them(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, database_url, namespace, ThemesSettings, group_id="themes-test")
    settings = settings.model_copy(update={"metric_interval_s": 0.2})
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    events: list[Any] = [
        submitted(f"{run}-1", 2, "Delivery took three weeks and support never answered"),
        submitted(f"{run}-2", 3, "The package arrived damaged", days_ago=1),
        submitted(f"{run}-3", 10, "Easy to use and fast shipping"),
        submitted(f"{run}-4", 8, None),
        submitted(f"{run}-5", 6, "Way too expensive", person="erased-one"),
        submitted(f"{run}-6", 9, "   "),  # blank: not a comment
    ]
    events += events[:2]  # duplicates / redelivery
    events.append(
        ResponseRevised(
            response_id=f"{run}-3",
            respondent_id=f"u-{run}-3",
            version=2,
            score=4,
            comment="Actually the app crashes constantly",
            channel="web",
            answered_at=NOW,
            revised_at=NOW,
        )
    )
    events.append(RespondentErased(erasure_id=f"{run}-e", respondent_id="erased-one", requested_at=NOW))
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(events))

    def gauge(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    async with running_loop(settings, spec(settings, now=pinned)) as run_loop:
        await eventually(run_loop.committed_at_least(len(events)))

        async def gauged() -> bool:  # the tick reads the counts the batch committed
            return gauge("nps_theme_commented", category="detractor") == 3

        await eventually(gauged, timeout=10)
    counted = await stored(database_url)
    assert counted == expected(events)
    # The dashboard's top themes (7-day window, everyone): run-1 today and run-2 yesterday mention
    # delivery; the revision moved run-3 to a detractor about bugs; the erased price comment is gone.
    assert gauge("nps_theme_mentions", theme="delivery", category="detractor") == 2
    assert gauge("nps_theme_mentions", theme="bugs", category="detractor") == 1
    assert gauge("nps_theme_mentions", theme="price", category="detractor") == 0
    assert gauge("nps_theme_commented", category="promoter") == 0
    assert counted[("delivery@all", TODAY)] == Counts(0, 0, 1)  # run-1 (run-2 is yesterday's)
    assert "price@all" not in {k for k, _ in counted}  # erased with its respondent
    assert counted[("bugs@channel:web", TODAY)] == Counts(0, 0, 1)  # the revision re-tagged run-3

    app = create_app(settings, pinned)
    engine = make_engine(database_url)
    auth = await serve_in_process(app, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://themes") as client:
        reply = await client.get("/v1/themes", params={"window": "7d"}, headers=auth)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["responses"] == 5 and answer["commented"] == 3  # run-4 and run-6 have no comment
        delivery = next(t for t in answer["themes"] if t["theme"] == "delivery")
        assert delivery["mentions"] == 2 and delivery["share"] == pytest.approx(2 / 3)
        assert delivery["mentioning"]["nps"] == pytest.approx(-100.0)
        assert delivery["not_mentioning"]["n"] == 3
        detractors = (await client.get("/v1/themes", params={"category": "detractor"}, headers=auth)).json()
        assert next(t for t in detractors["themes"] if t["theme"] == "bugs")["mentions"] == 1
        drivers = await client.get("/v1/themes/drivers", params={"window": "7d", "baseline": "28d"}, headers=auth)
        assert drivers.status_code == 200 and drivers.json()["detractor_comments_now"] == 3
        series = await client.get("/v1/themes/series", params={"theme": "delivery", "interval": "day"}, headers=auth)
        assert series.status_code == 200
        assert [p["mentions"] for p in series.json()["points"]][-2:] == [1, 1]
        for params in ({"window": "7x"}, {"category": "angry"}, {"segment": "nope"}):
            bad = await client.get("/v1/themes", params=params, headers=auth)
            assert bad.status_code == 422, params
        bad = await client.get("/v1/themes/series", params={"theme": "weather"}, headers=auth)
        assert bad.status_code == 422 and "unknown theme" in bad.text
    await engine.dispose()

    # The comments kept for `nps themes suggest`: each response's current one, none when blank,
    # absent, or erased; a later erasure of a respondent deletes theirs.
    assert await kept_comments(database_url, run) == {
        f"{run}-1": "Delivery took three weeks and support never answered",
        f"{run}-2": "The package arrived damaged",
        f"{run}-3": "Actually the app crashes constantly",
    }
    later = [
        RespondentErased(erasure_id=f"{run}-e2", respondent_id=f"u-{run}-1", requested_at=datetime.now(UTC)),
        ResponseRevised(
            response_id=f"{run}-2", respondent_id=f"u-{run}-2", version=2, score=3, comment=None, channel="web",
            answered_at=NOW - timedelta(days=1), revised_at=datetime.now(UTC),
        ),
    ]  # fmt: skip
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(later))
    async with running_loop(settings, spec(settings, now=pinned)) as run_loop:
        await eventually(run_loop.committed_at_least(len(events) + len(later)))
    assert await kept_comments(database_url, run) == {f"{run}-3": "Actually the app crashes constantly"}
    assert await stored(database_url) == expected(events + later)


async def cli(*argv: str) -> int:
    """`nps …` as typed, in a thread: it runs its own event loop. It points logging at the captured
    stderr, which pytest closes: the root logger's handlers are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(main, list(argv))
    finally:
        root.handlers[:], root.level = handlers, level


async def kept_comments(database_url: str, run: str) -> dict[str, str]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT response_id, comment FROM themes.theme_comments WHERE response_id LIKE :run"),
                {"run": f"{run}-%"},
            )
            return {r.response_id: r.comment for r in rows}
    finally:
        await engine.dispose()


async def test_suggest_finds_what_the_taxonomy_misses_among_the_kept_comments(
    bootstrap: str,
    database_url: str,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = service_settings(bootstrap, database_url, namespace, ThemesSettings, group_id="themes-suggest")
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    hidden = [
        "No offline mode, useless on the train.",
        "Offline access on site, please.",
        "Working offline is impossible.",
    ]
    events: list[Any] = [
        submitted(f"{run}-{i}", 2 if i % 4 else 9, hidden[i % 3], person=f"p-{run}-{i}") for i in range(24)
    ]
    events += [submitted(f"{run}-d{i}", 1, "Delivery took weeks", person=f"q-{run}-{i}") for i in range(10)]
    events += [
        ResponseSubmitted(
            response_id=f"{run}-s{i}", respondent_id=f"s-{run}-{i}", score=1, comment="The sidebar icons are tiny",
            channel=f"kiosk-{run}", answered_at=NOW, submitted_at=NOW,
        )
        for i in range(6)
    ]  # fmt: skip
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(events))
    async with running_loop(settings, spec(settings)) as run_loop:
        await eventually(run_loop.committed_at_least(len(events)))

    request = suggest.Request(window="7d", min_count=5, output="yaml")
    assert await suggest.run(database_url, request, settings.segment_dimensions) == 0
    out = capsys.readouterr().out
    proposed = yaml.safe_load(out)["themes"]
    assert "offline" in proposed and proposed["offline"]["phrases"] == {"en": ["offline"]}
    assert not any("deliver" in key for key in proposed)  # tagged by the taxonomy: not a candidate

    # Only the detractors' comments: 18 of the 24 offline ones; and only the kiosk channel's.
    detractors = suggest.Request(window="7d", min_count=5, category="detractor")
    assert await suggest.run(database_url, detractors, settings.segment_dimensions) == 0
    assert "Offline (offline, en): 18 comments" in capsys.readouterr().out
    kiosk = suggest.Request(window="7d", min_count=5, segment=f"channel:kiosk-{run}")
    assert await suggest.run(database_url, kiosk, settings.segment_dimensions) == 0
    out = capsys.readouterr().out
    assert "6 comments, 6 with no theme" in out and "offline" not in out and "sidebar" in out.lower()

    # The command line, as a user types it, against the same database.
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await cli("themes", "suggest", "--window", "7d", "--min-count", "5", "--category", "detractor") == 0
    assert "Offline (offline, en): 18 comments" in capsys.readouterr().out
    assert await cli("themes", "suggest", "--as-of", "2026-01-01", "--min-count", "5") == 0
    assert "0 comments" in capsys.readouterr().out  # nothing answered in that window
    with pytest.raises(SystemExit):
        await cli("themes", "suggest", "--category", "angry")
    capsys.readouterr()

    for bad in (
        suggest.Request(window="7x"),
        suggest.Request(segment="nope"),
        suggest.Request(top=0),
        suggest.Request(taxonomy="/nonexistent.yaml"),
    ):
        assert await suggest.run(database_url, bad, settings.segment_dimensions) == 2, bad
        assert capsys.readouterr().err.startswith("nps themes suggest: ")


async def test_a_drop_alert_s_drivers_come_from_the_themes_api(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    """What alerts asks when a drop alert fires (alerts_service/drivers.py), answered by the real
    themes app from counts the real consumer wrote: delivery rose from none to most detractor comments."""
    settings = service_settings(bootstrap, database_url, namespace, ThemesSettings, group_id="themes-drivers")
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    channel = f"drv-{run}"

    def detractor(n: int, comment: str, days_ago: int) -> ResponseSubmitted:
        return ResponseSubmitted(
            response_id=f"{run}-{n}", respondent_id=f"d-{run}-{n}", score=2, comment=comment, channel=channel,
            answered_at=NOW - timedelta(days=days_ago), submitted_at=NOW,
        )  # fmt: skip

    events = [detractor(i, "Too expensive", 10) for i in range(6)]
    events += [detractor(10 + i, "My parcel never arrived", 0) for i in range(6)]
    events += [detractor(20 + i, "Too expensive", 1) for i in range(2)]
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(events))
    async with running_loop(settings, spec(settings, now=pinned)) as run_loop:
        await eventually(run_loop.committed_at_least(len(events)))

    app = create_app(settings, pinned)
    engine = make_engine(database_url)
    auth = await serve_in_process(app, engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://themes", headers=auth) as client:

        async def get(path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
            reply = await client.get(path, params=dict(params))
            return reply.status_code, reply.content

        found = await ThemeDrivers("http://themes", None, get=get)(f"channel:{channel}", 7, 28, TODAY)
        assert [d.theme for d in found] == ["delivery"]  # price fell (6 of 6 -> 2 of 8): not a driver
        assert found[0].share_before == 0.0 and found[0].share_now == pytest.approx(0.75)
        assert found[0].rise_points == pytest.approx(75.0) and found[0].p_value is not None
        assert found[0].p_value < 0.01
        assert describe(found) == "delivery: 0% \u2192 75% of detractor comments"
    await engine.dispose()


THEME_TABLES = ("theme_responses", "theme_daily", "theme_comments", "erasures", "segments")


@settings(
    max_examples=examples(8),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_theme_counts_and_kept_comments_equal_a_recompute_under_any_delivery(
    data: st.DataObject, bootstrap: str, database_url: str
) -> None:
    """scoring's property test (tests/integration/test_scoring_exactness.py) for the themes consumer:
    random histories with comments (none, blank, one theme, two, a negated one), revisions that change
    them and erasures, delivered at least once in any order and in batches of any size."""
    history = data.draw(scoring_model.histories(max_ops=30), label="history")
    delivered = data.draw(scoring_model.deliveries(history), label="delivered")
    max_batch = data.draw(st.integers(1, 25), label="max_batch")
    await truncate(database_url, "themes", THEME_TABLES)
    engine = make_engine(database_url)
    namespace = f"t{uuid.uuid4().hex[:10]}"
    settings_ = service_settings(
        bootstrap, database_url, namespace, ThemesSettings, group_id=f"g-{namespace}", consumer_max_batch=max_batch
    )
    await create_topics(settings_)
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings_.topics.responses, [(b"k", e.to_bytes()) for e in delivered])
    async with running_loop(settings_, spec(settings_)) as run:
        await eventually(run.committed_at_least(len(delivered)), timeout=30)
    try:
        assert await stored(database_url) == scoring_model.recompute_themes(history, TAXONOMY.tag)
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT response_id, comment FROM themes.theme_comments"))
            assert {r.response_id: r.comment for r in rows} == scoring_model.kept_comments(history)
    finally:
        await engine.dispose()


async def test_themes_rebuild_checks_repairs_and_replays_the_theme_counts(
    bootstrap: str, database_url: str, pg_admin_url: str, namespace: str
) -> None:
    """`nps themes rebuild`: --check finds a damaged count, a rebuild from theme_responses repairs
    it, and --replay of the log into an empty database writes the same counts and comments."""
    settings = service_settings(bootstrap, database_url, namespace, ThemesSettings, group_id="themes-rebuild")
    await create_topics(settings)
    rng = random.Random(5)
    events = [e for n in range(10) for e in scoring_model.build_history(scoring_model.Seeded(rng), 30, f"rb{n}-")]
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(events))
    async with running_loop(settings, spec(settings)) as run_loop:
        await eventually(run_loop.committed_at_least(len(events)))
    live = await stored(database_url)

    env = nps_env(DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, NPS_TOPIC_NAMESPACE=namespace)
    checked = nps_here("themes", "rebuild", "--check", env=env)
    assert checked.returncode == 0 and "0 differ" in checked.stdout, checked.stdout + checked.stderr
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE themes.theme_daily SET detractors = detractors + 3 WHERE segment = '_all@all'")
        )
    await engine.dispose()
    damaged = nps_here("themes", "rebuild", "--check", env=env)
    assert damaged.returncode == 1 and "0 differ" not in damaged.stdout, damaged.stdout
    assert nps_here("themes", "rebuild", env=env).returncode == 0
    assert await stored(database_url) == live

    empty = await asyncio.to_thread(fresh_database, pg_admin_url)
    replayed = nps_here("themes", "rebuild", "--replay", env={**env, "DATABASE_URL": empty})
    assert replayed.returncode == 0, replayed.stderr
    assert await stored(empty) == scoring_model.recompute_themes(events, TAXONOMY.tag)
    engine = make_engine(empty)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT response_id, comment FROM themes.theme_comments"))
            assert {r.response_id: r.comment for r in rows} == scoring_model.kept_comments(events)
    finally:
        await engine.dispose()
    refused = nps_here("themes", "rebuild", "--replay", env={**env, "DATABASE_URL": empty})
    assert refused.returncode == 2 and "empty" in refused.stdout
