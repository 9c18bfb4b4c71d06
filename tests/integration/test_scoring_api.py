"""Scoring's query API over HTTP (the app in-process, its real handler and PostgreSQL behind it):
breakdown, series, compare, as_of, the cardinality cap, and 422s that name the parameter. And the
ScoreChanged rate: at most one per segment per second, the last one carrying the final counts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from scoring_service.bootstrap import create_app, spec
from scoring_service.settings import ScoringSettings
from shared.consumer import Message
from shared.db import make_engine
from shared.events import ResponseSubmitted, score_events
from shared.nps import Counts, compare
from shared.wire import wire_of
from tests.helpers import (
    TEST_PSEUDONYM_SECRET,
    create_topics,
    eventually,
    produce,
    read_topic,
    running_loop,
    serve_in_process,
    service_settings,
    started_producer,
    submitted_event,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = NOW.date()


def pinned() -> datetime:
    return NOW


def submitted(
    rid: str, score: int, days_ago: int = 0, channel: str | None = None, **attributes: str
) -> ResponseSubmitted:
    return submitted_event(rid, score, NOW, days_ago, channel, **attributes)


def settings_for(database_url: str, **extra: Any) -> ScoringSettings:
    return ScoringSettings(
        database_url=database_url,  # type: ignore[arg-type]
        kafka_bootstrap_servers="127.0.0.1:1",
        combinations="product+region",
        pseudonym_secret=TEST_PSEUDONYM_SECRET,
        # Not these tests' subject (tests/integration/test_hung_dependencies.py's): on a loaded 2-core
        # host a pool's connect and ping took over the default 2 s, and a query whose parameters were
        # bad answered 503 (FastAPI opens a route's connection before it validates the route's query).
        **{"db_timeout_s": 10.0, **extra},
    )


@asynccontextmanager
async def scoring_api(
    database_url: str, events: list[ResponseSubmitted], now: Callable[[], datetime] = pinned, **extra: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over a database filled by the service's own batch handler."""
    settings = settings_for(database_url, **extra)
    engine = make_engine(database_url)
    handler = spec(settings, pinned).handler
    async with engine.begin() as conn:
        await handler(conn, [Message(wire_of(e), "t", 0, i, 0) for i, e in enumerate(events)])
    app = create_app(settings, now)  # "today" is NOW's day, even if the real day has turned since
    headers = await serve_in_process(app, engine)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://scoring", headers=headers
        ) as client:
            yield client
    finally:
        await engine.dispose()


PRODUCTS = [
    *(submitted(f"a{i}", 10, i % 5, "web", product="atlas", region="eu") for i in range(6)),
    *(submitted(f"z{i}", 2, i % 5, "email", product="zephyr", region="us") for i in range(4)),
    submitted("z-old", 9, 60, "email", product="zephyr", region="us"),  # outside 30d
    *(submitted(f"n{i}", 8, 1, "web", product="nimbus", region="eu") for i in range(3)),
]


async def test_breakdown_lists_every_value_sorted_with_intervals(database_url: str) -> None:
    async with scoring_api(database_url, PRODUCTS) as client:
        reply = await client.get("/v1/nps/breakdown", params={"dimension": "product", "window": "30d"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert [(v["value"], v["nps"], v["n"]) for v in body["values"]] == [
            ("atlas", 100.0, 6),
            ("nimbus", 0.0, 3),
            ("zephyr", -100.0, 4),
        ]
        assert all(v["ci95"]["low"] <= (v["nps"] or 0) <= v["ci95"]["high"] for v in body["values"])
        assert body["values"][0]["segment"] == "product:atlas"
        lowest = await client.get("/v1/nps/breakdown", params={"dimension": "product", "sort": "-nps"})
        assert [v["value"] for v in lowest.json()["values"]] == ["zephyr", "nimbus", "atlas"]
        by_n = await client.get("/v1/nps/breakdown", params={"dimension": "product", "sort": "n", "window": "90d"})
        assert [(v["value"], v["n"]) for v in by_n.json()["values"]] == [("atlas", 6), ("zephyr", 5), ("nimbus", 3)]
        combined = await client.get("/v1/nps/breakdown", params={"dimension": "region+product"})
        assert [v["segment"] for v in combined.json()["values"]] == [
            "product:atlas,region:eu",
            "product:nimbus,region:eu",
            "product:zephyr,region:us",
        ]
        one = await client.get("/v1/nps", params={"segment": "region:us,product:zephyr", "window": "90d"})
        assert (one.json()["segment"], one.json()["n"]) == ("product:zephyr,region:us", 5)


async def test_windows_answers_every_configured_window_at_once(database_url: str) -> None:
    async with scoring_api(database_url, PRODUCTS, windows="1d,7d,90d") as client:
        reply = await client.get("/v1/nps/windows", params={"segment": "product:zephyr"})
        assert reply.status_code == 200, reply.text
        answers = reply.json()["windows"]
        assert [a["window"] for a in answers] == ["1d", "7d", "90d"]
        for answer in answers:
            single = await client.get("/v1/nps", params={"segment": "product:zephyr", "window": answer["window"]})
            assert answer == single.json()
        assert [a["n"] for a in answers] == [1, 4, 5]


def test_a_bad_windows_setting_fails_at_start_up() -> None:
    for bad in ("", "7", "0d,30d"):
        with pytest.raises(ValueError):
            ScoringSettings(windows=bad)


async def test_series_and_as_of_answer_as_the_days_stood(database_url: str) -> None:
    async with scoring_api(database_url, PRODUCTS) as client:
        reply = await client.get(
            "/v1/nps/series",
            params={"interval": "day", "from": (TODAY - timedelta(days=4)).isoformat(), "to": TODAY.isoformat()},
        )
        assert reply.status_code == 200, reply.text
        points = reply.json()["points"]
        assert [p["first_day"] for p in points] == [(TODAY - timedelta(days=d)).isoformat() for d in range(4, -1, -1)]
        assert sum(p["n"] for p in points) == 13
        weekly = await client.get(
            "/v1/nps/series", params={"interval": "week", "from": (TODAY - timedelta(days=70)).isoformat()}
        )
        assert sum(p["n"] for p in weekly.json()["points"]) == 14
        assert all(datetime.fromisoformat(p["first_day"]).weekday() == 0 for p in weekly.json()["points"][1:])
        # As the 30-day window stood three days ago: the days since then are outside it.
        earlier = await client.get(
            "/v1/nps", params={"window": "30d", "as_of": (TODAY - timedelta(days=3)).isoformat()}
        )
        assert earlier.json()["n"] == sum(1 for e in PRODUCTS if 3 <= (TODAY - e.answered_at.date()).days < 33)


async def test_today_is_the_day_of_the_services_clock(database_url: str) -> None:
    """The default as_of, the series' default end and the edge of the future follow the app's clock,
    so a run whose events were built before midnight still reads them as of that day afterwards."""
    earlier = NOW - timedelta(days=40)
    async with scoring_api(database_url, PRODUCTS, now=lambda: earlier) as client:
        reply = await client.get("/v1/nps", params={"segment": "product:zephyr", "window": "30d"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["last_day"] == earlier.date().isoformat()
        assert reply.json()["n"] == 1  # z-old, 60 days before NOW; the four of the last days are ahead
        series = (await client.get("/v1/nps/series", params={"interval": "day"})).json()["points"]
        assert series[-1]["first_day"] == earlier.date().isoformat()
        ahead = await client.get("/v1/nps", params={"as_of": (earlier.date() + timedelta(days=1)).isoformat()})
        assert ahead.status_code == 422 and "in the future" in ahead.text


async def test_compare_gives_the_adjusted_wald_test(database_url: str) -> None:
    baseline = [submitted(f"b{i}", 10 if i % 10 < 7 else 3, 8 + i % 20) for i in range(200)]
    current = [submitted(f"c{i}", 10 if i % 10 < 3 else 3, i % 7) for i in range(60)]
    async with scoring_api(database_url, baseline + current) as client:
        reply = await client.get("/v1/nps/compare", params={"window": "7d", "baseline": "28d"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        expected = compare(Counts(140, 0, 60), Counts(18, 0, 42))
        assert (body["baseline"]["n"], body["current"]["n"]) == (200, 60)
        assert body["z"] == pytest.approx(expected.z) and body["difference"] == pytest.approx(expected.difference)
        assert body["p_value"] < 0.001 and body["significant_drop"] is True
        small = await client.get("/v1/nps/compare", params={"window": "1d", "baseline": "2d"})
        assert small.json()["significant_drop"] is False  # a handful of responses proves nothing


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/nps", {"window": "7"}, "window"),
        ("/v1/nps", {"segment": "plan:a,region:eu"}, "segment"),
        ("/v1/nps", {"as_of": "2026-13-01"}, "as_of"),
        ("/v1/nps", {"as_of": "2999-01-01"}, "as_of"),
        ("/v1/nps/compare", {"as_of": "0001-01-01"}, "as_of"),  # found by fuzzing: a 500 once
        ("/v1/nps/series", {"from": "0001-01-01"}, "from"),
        ("/v1/nps/series", {"from": "0001-01-01", "to": "0001-01-05"}, "to"),
        ("/v1/nps/series", {"to": "2999-01-01"}, "to"),
        ("/v1/nps/breakdown", {}, "dimension"),
        ("/v1/nps/breakdown", {"dimension": "Product"}, "dimension"),
        ("/v1/nps/breakdown", {"dimension": "plan,region"}, "dimension"),
        ("/v1/nps/breakdown", {"dimension": "product", "sort": "best"}, "sort"),
        ("/v1/nps/series", {"interval": "year"}, "interval"),
        ("/v1/nps/series", {"from": "2026-11-20", "to": "2026-11-01"}, "from"),
        ("/v1/nps/series", {"interval": "day", "from": "2020-01-01", "to": "2026-01-01"}, "interval"),
        ("/v1/nps/compare", {"baseline": "0d"}, "baseline"),
    ],
)
async def test_bad_parameters_get_422_naming_them(
    database_url: str, path: str, params: dict[str, str], field: str
) -> None:
    async with scoring_api(database_url, []) as client:
        reply = await client.get(path, params=params)
    assert reply.status_code == 422, reply.text
    assert field in [e["field"] for e in reply.json()["errors"]], reply.json()


async def test_past_the_cap_new_values_count_under_other(database_url: str) -> None:
    events = [submitted(f"s{i}", 9, channel="web", sku=f"sku-{i}") for i in range(5)]
    async with scoring_api(database_url, events, max_values_per_dimension=3) as client:
        reply = await client.get("/v1/nps/breakdown", params={"dimension": "sku", "sort": "value"})
    values = {v["value"]: v["n"] for v in reply.json()["values"]}
    assert values == {"sku-0": 1, "sku-1": 1, "sku-2": 1, "other": 2}


async def test_score_changed_at_most_once_per_segment_per_second(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, database_url, namespace, ScoringSettings, group_id=f"g-{namespace}")
    await create_topics(settings)
    async with started_producer(bootstrap) as producer, running_loop(settings, spec(settings)) as run:
        for wave in range(6):  # a change every 0.3 s for ~2 s
            await produce(producer, settings.topics.responses, [(b"k", submitted(f"w{wave}", 9).to_bytes())])
            await asyncio.sleep(0.3)
        await eventually(run.committed_at_least(6))
        records = await read_topic(bootstrap, settings.topics.scores, timeout=4)
    changes = [score_events.validate_json(r.value) for r in records]
    overall = sorted((c for c in changes if c.segment == "all"), key=lambda c: c.computed_at)
    assert 2 <= len(overall) < 6, [c.computed_at for c in overall]
    gaps = [(b.computed_at - a.computed_at).total_seconds() for a, b in itertools.pairwise(overall)]
    assert all(gap >= 1.0 for gap in gaps), gaps
    assert overall[-1].current.counts == Counts(6, 0, 0)  # the last one carries the final counts
