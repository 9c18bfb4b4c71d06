"""Themes through the real consumer, broker and database: theme counts equal a recompute from the
events after duplicates, redelivery, a revision that changes the comment, and an erasure; and the
themes API answers from them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scoring_service.domain import Dimensions, SegmentPlan, Version, segments_of
from scoring_service.themes import load_taxonomy, theme_keys
from scoring_service.themes_service.bootstrap import create_app, spec
from scoring_service.themes_service.settings import ThemesSettings
from shared.db import make_engine
from shared.events import RespondentErased, ResponseRevised, ResponseSubmitted
from shared.nps import Counts, classify
from tests.helpers import (
    create_topics,
    eventually,
    produce,
    running_loop,
    serve_in_process,
    service_settings,
    started_producer,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
TODAY = NOW.date()
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
            rows = await conn.execute(sa.text("SELECT * FROM scoring.theme_daily"))
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
        await produce(producer, settings.topics.responses, [(e.respondent_id.encode(), e.to_bytes()) for e in events])
    async with running_loop(settings, spec(settings)) as run_loop:
        await eventually(run_loop.committed_at_least(len(events)))
    counted = await stored(database_url)
    assert counted == expected(events)
    assert counted[("delivery@all", TODAY)] == Counts(0, 0, 1)  # run-1 (run-2 is yesterday's)
    assert "price@all" not in {k for k, _ in counted}  # erased with its respondent
    assert counted[("bugs@channel:web", TODAY)] == Counts(0, 0, 1)  # the revision re-tagged run-3

    app = create_app(settings)
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
