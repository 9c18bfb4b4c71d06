"""Alerts through the real loop, broker and database: ScoreChanged mirrored into alerts' own days,
rounds on the tick (after a batch, and on the schedule with no traffic at all), AlertFired with its
explanation, redelivery that changes nothing, resolution; the API's list, ack and silences."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts_service import repository
from alerts_service.bootstrap import create_app, spec
from alerts_service.detection import RateRule, Rules
from alerts_service.domain import Timing
from alerts_service.drivers import ThemeDrivers
from alerts_service.handlers import BUCKET, Due, EvaluateRounds, MirrorScores
from alerts_service.repository import Seen
from alerts_service.settings import AlertSettings
from shared.consumer import Message
from shared.db import SERVICE_SCHEMAS, alembic_config, make_engine
from shared.events import (
    AlertAcknowledged,
    AlertFired,
    AlertResolved,
    DayCounts,
    DayRates,
    ScoreChanged,
    WindowCounts,
    alert_events,
)
from shared.nps import Counts, Rate
from shared.sealed import Sealer
from tests.helpers import (
    FAST_GROUP,
    TEST_PSEUDONYM_SECRET,
    TEST_SECRETS_KEY,
    add_key,
    create_topics,
    eventually,
    produce,
    read_topic,
    running_loop,
    second_owner_retries,
    serve_in_process,
    started_producer,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)
TODAY = T0.date()
STABLE = Counts(6, 2, 2)  # NPS 40, ten a day
WORSE = Counts(1, 2, 7)  # NPS -60


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def settings_for(bootstrap: str, database_url: str, namespace: str, **rules: bool) -> AlertSettings:
    only: dict[str, Any] = {
        "drop_enabled": False,
        "ewma_enabled": False,
        "incident_enabled": False,
        "response_rate_enabled": False,
    }
    return AlertSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,  # type: ignore[arg-type]
        topic_namespace=namespace,
        topic_partitions=3,
        evaluate_interval_s=0.2,
        for_evaluations=1,
        for_s=0,
        min_round_gap_s=0,
        clear_s=0,
        cooldown_s=0,
        **{**only, "silence_enabled": False, **rules, **FAST_GROUP},
    )


def changed(segment: str, days: dict[date, Counts], at: datetime) -> ScoreChanged:
    """What scoring publishes for `segment` at `at`: 7-day and 28-day windows, and their days."""
    as_of = at.date()
    cur_first, base_first = as_of - timedelta(days=6), as_of - timedelta(days=34)
    span = {d: c for d, c in days.items() if base_first <= d <= as_of}

    def window(first: date, last: date) -> WindowCounts:
        total = sum((c for d, c in span.items() if first <= d <= last), Counts())
        return WindowCounts(first_day=first, last_day=last, **_counts(total))

    return ScoreChanged(
        segment=segment,
        as_of=as_of,
        current=window(cur_first, as_of),
        baseline=window(base_first, cur_first - timedelta(days=1)),
        computed_at=at,
        daily=[DayCounts(day=d, **_counts(c)) for d, c in sorted(span.items())],
    )


def _counts(c: Counts) -> dict[str, int]:
    return {"promoters": c.promoters, "passives": c.passives, "detractors": c.detractors}


def history(current: Counts, baseline: Counts = STABLE, today: date = TODAY) -> dict[date, Counts]:
    """35 days: 28 of `baseline`, then 7 (ending today) of `current`."""
    return {today - timedelta(days=i): (current if i < 7 else baseline) for i in range(35)}


def combined(*parts: dict[date, Counts]) -> dict[date, Counts]:
    return {d: sum((p[d] for p in parts), Counts()) for d in parts[0]}


async def send(bootstrap: str, topic: str, events: list[ScoreChanged]) -> None:
    async with started_producer(bootstrap) as producer:
        await produce(producer, topic, [(e.segment.encode(), e.to_bytes()) for e in events])


async def alerts_in(bootstrap: str, topic: str, expect: int) -> list[Any]:
    return [alert_events.validate_json(r.value) for r in await read_topic(bootstrap, topic, expect=expect)]


DRIVERS_ANSWER = {
    "drivers": [
        {"theme": "delivery", "label": "Delivery", "detractor_share_now": 0.19, "detractor_share_before": 0.04,
         "rise_points": 15.0, "p_value": 0.001},
        {"theme": "price", "label": "Price", "detractor_share_now": 0.1, "detractor_share_before": 0.2,
         "rise_points": -10.0, "p_value": 0.99},
    ]
}  # fmt: skip


async def test_a_drop_fires_explained_once_and_resolves_once(bootstrap: str, database_url: str, namespace: str) -> None:
    settings = settings_for(bootstrap, database_url, namespace, drop_enabled=True)
    await create_topics(settings)
    clock = Clock()
    asked: list[str] = []

    async def themes_answer(path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        # what the themes service answers (its real answer: tests/integration/test_themes.py)
        asked.append(params["segment"])
        return (200, json.dumps(DRIVERS_ANSWER).encode()) if params["segment"] == "all" else (503, b"")

    free = history(STABLE)
    pro_stable, pro_worse = history(STABLE), history(WORSE)
    phases = [
        [
            changed("plan:free", free, T0),
            changed("plan:pro", pro_stable, T0),
            changed("all", combined(free, pro_stable), T0),
        ],
        [
            changed("plan:pro", pro_worse, T0 + timedelta(minutes=1)),
            changed("all", combined(free, pro_worse), T0 + timedelta(minutes=1)),
        ],
    ]
    drivers = ThemeDrivers("http://themes", None, get=themes_answer)
    async with running_loop(settings, spec(settings, clock, drivers)) as run:
        sent = 0
        for minute, phase in enumerate(phases):
            clock.now = T0 + timedelta(minutes=minute)
            await send(bootstrap, settings.topics.scores, phase)
            sent += len(phase)
            await eventually(run.committed_at_least(sent))
        fired = await alerts_in(bootstrap, settings.topics.alerts, expect=2)
        assert sorted((type(e).__name__, e.segment) for e in fired) == [
            ("AlertFired", "all"),
            ("AlertFired", "plan:pro"),
        ]
        overall = next(e for e in fired if e.segment == "all")
        assert isinstance(overall, AlertFired) and overall.rule == "drop"
        x = overall.explanation
        assert (x.current.promoters, x.current.passives, x.current.detractors) == (49, 28, 63)  # 7 days of free + pro
        assert x.current.nps == pytest.approx(-10.0) and x.baseline.nps == pytest.approx(40.0)
        assert x.drop_points == pytest.approx(50.0) and x.q_value is not None and x.q_value < 0.05
        assert x.current.first_day == TODAY - timedelta(days=6) and x.baseline.last_day == TODAY - timedelta(days=7)
        assert x.contributors[0].segment == "plan:pro" and x.contributors[0].points == pytest.approx(-50.0)
        # the themes that drive it, asked of themes once per fired drop alert; themes failing for
        # plan:pro leaves that alert without drivers, fired all the same
        assert sorted(asked) == ["all", "plan:pro"]
        assert [d.theme for d in x.drivers] == ["delivery"] and x.drivers[0].rise_points == 15.0
        assert x.summary.endswith("; delivery: 4% → 19% of detractor comments")
        pro = next(e for e in fired if e.segment == "plan:pro")
        assert isinstance(pro, AlertFired) and pro.explanation.drivers == []

        # the same scores again (a redelivery): nothing new, nothing counted twice
        await send(bootstrap, settings.topics.scores, phases[1])
        sent += 2
        await eventually(run.committed_at_least(sent))
        # recovery: both resolve with their alert's id
        clock.now = T0 + timedelta(minutes=6)  # another 5-minute bucket of arrivals
        await send(
            bootstrap,
            settings.topics.scores,
            [changed("plan:pro", pro_stable, clock.now), changed("all", combined(free, pro_stable), clock.now)],
        )
        sent += 2
        await eventually(run.committed_at_least(sent))
        events = await alerts_in(bootstrap, settings.topics.alerts, expect=4)

    assert [type(e) for e in events].count(AlertFired) == 2
    resolved = [e for e in events if isinstance(e, AlertResolved)]
    assert {(e.segment, e.alert_id) for e in resolved} == {(e.segment, e.alert_id) for e in fired}
    engine = make_engine(database_url)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.text("SELECT segment, resolved_at, rule FROM alerts.alerts ORDER BY segment"))
        ).all()
        arrived = (
            await conn.execute(
                sa.text(
                    "SELECT bucket, promoters, passives, detractors FROM alerts.arrivals WHERE segment = 'plan:pro' "
                    "ORDER BY bucket"
                )
            )
        ).all()
    await engine.dispose()
    assert [(r.segment, r.resolved_at is not None, r.rule) for r in rows] == [
        ("all", True, "drop"),
        ("plan:pro", True, "drop"),
    ]
    # what arrived for plan:pro: 7 days went from STABLE to WORSE, then back; the first event is history,
    # and the redelivered one counted nothing
    assert [tuple(r) for r in arrived] == [(T0, -35, 0, 35), (T0 + BUCKET, 35, 0, -35)]


def with_rates(event: ScoreChanged, per_day: Mapping[date, Rate]) -> ScoreChanged:
    """`event` carrying these days of invitations, as scoring's rates consumer has it send them (its
    span from their first: scoring's reaches 84 days back, beyond the rate windows' 38)."""
    days = [DayRates(day=d, invited=r.invited, responded=r.responded) for d, r in sorted(per_day.items())]
    return event.model_copy(update={"rates": days, "daily_first_day": min(per_day)})


SETTLE = RateRule().settle_days


def invitations(answered_now: int, answered_before: int = 20, today: date = TODAY) -> dict[date, Rate]:
    """100 invitations a day for 42 days: the 7 days ending SETTLE days ago (the rule's current
    window) answered `answered_now` times a day, the 28 before `answered_before`; the youngest
    SETTLE days with nobody answering yet (their answers still coming, which the rule must not read)."""
    return {
        today - timedelta(days=i): Rate(100, 0 if i < SETTLE else answered_now if i < SETTLE + 7 else answered_before)
        for i in range(42)
    }


async def test_a_fallen_response_rate_fires_explained_and_resolves(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace, response_rate_enabled=True)
    await create_topics(settings)
    clock = Clock()
    steady = history(STABLE)
    async with running_loop(settings, spec(settings, clock)) as run:
        await send(
            bootstrap, settings.topics.scores, [with_rates(changed("channel:email", steady, T0), invitations(20))]
        )
        await eventually(run.committed_at_least(1))
        clock.now = T0 + timedelta(minutes=1)
        fallen = with_rates(changed("channel:email", steady, clock.now), invitations(8))  # 20% -> 8%
        await send(bootstrap, settings.topics.scores, [fallen])
        await eventually(run.committed_at_least(2))
        [fired] = await alerts_in(bootstrap, settings.topics.alerts, expect=1)
        assert isinstance(fired, AlertFired) and (fired.rule, fired.segment) == ("response_rate", "channel:email")
        x = fired.explanation
        assert x.drop_points == pytest.approx(12.0) and x.q_value is not None and x.q_value < 0.05
        assert (x.detail["current_invited"], x.detail["current_responded"]) == (700, 56)
        assert (x.detail["baseline_invited"], x.detail["baseline_responded"]) == (2800, 560)
        assert x.detail["current_last_day"] == (TODAY - timedelta(days=SETTLE)).isoformat()
        assert "fell 12.0 points: 8.0% (56 of 700 invited) vs 20.0% (560 of 2800)" in x.summary

        # An older score arriving late changes nothing held; the rate back to 20% resolves the alert.
        await send(
            bootstrap, settings.topics.scores, [with_rates(changed("channel:email", steady, T0), invitations(2))]
        )
        clock.now = T0 + timedelta(minutes=2)
        await send(
            bootstrap,
            settings.topics.scores,
            [with_rates(changed("channel:email", steady, clock.now), invitations(20))],
        )
        await eventually(run.committed_at_least(4))
        events = await alerts_in(bootstrap, settings.topics.alerts, expect=2)
        settled = TODAY - timedelta(days=SETTLE)
        held = await held_rates(database_url, "channel:email")
        newest = held.sum(settled - timedelta(days=6), settled)
        assert newest == Rate(700, 140)  # the newest score's, not the late one's
        assert held.sum(TODAY - timedelta(days=SETTLE - 1), TODAY) == Rate(100 * SETTLE, 0)
        # Every invitation erased: the segment's rates are none ('{}' stored), and rounds go on over them.
        clock.now = T0 + timedelta(minutes=3)
        none = changed("channel:email", steady, clock.now).model_copy(update={"rates": []})
        await send(bootstrap, settings.topics.scores, [none])
        await eventually(run.committed_at_least(5))
        await asyncio.sleep(1)  # rounds every 0.2 s
        assert not run.task.done()
    resolved = events[1]
    assert isinstance(resolved, AlertResolved) and resolved.alert_id == fired.alert_id
    held = await held_rates(database_url, "channel:email")
    assert held.sum(TODAY - timedelta(days=60), TODAY) == Rate(0, 0) and list(held.invited) == []


async def held_rates(database_url: str, segment: str) -> repository.RateDays:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await repository.rate_days_of(conn, [segment]))[segment]
    finally:
        await engine.dispose()


async def test_silence_fires_on_the_schedule_when_traffic_stops(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace, silence_enabled=True)
    await create_topics(settings)
    clock = Clock()
    wiring = spec(settings, clock)
    assert isinstance(wiring.tick, EvaluateRounds)
    async with running_loop(settings, wiring) as run:
        # 280 responses in the baseline: one every 2.4 h; 20 usual gaps = 48 h
        await send(bootstrap, settings.topics.scores, [changed("survey_id:nps-q4", history(STABLE), T0)])
        await eventually(run.committed_at_least(1))
        clock.now = T0 + timedelta(hours=30)  # quiet, but not unusually
        await eventually(round_at_or_after(wiring.tick, clock.now))
        assert await read_topic(bootstrap, settings.topics.alerts, timeout=1) == []
        clock.now = T0 + timedelta(hours=49)  # no event at all: the schedule alone finds it
        (event,) = await alerts_in(bootstrap, settings.topics.alerts, expect=1)
    assert isinstance(event, AlertFired) and event.rule == "silence" and event.segment == "survey_id:nps-q4"
    assert event.explanation.detail["usual_gap_s"] == pytest.approx(2.4 * 3600)
    assert event.explanation.detail["silent_s"] == pytest.approx(49 * 3600, abs=60)


def round_at_or_after(rounds: EvaluateRounds, moment: datetime) -> Any:
    async def check() -> bool:
        return rounds.last_round_at is not None and rounds.last_round_at >= moment

    return check


async def test_an_incident_fires_within_minutes_of_the_spike(bootstrap: str, database_url: str, namespace: str) -> None:
    settings = settings_for(bootstrap, database_url, namespace, incident_enabled=True)
    await create_topics(settings)
    clock = Clock()
    usual = {d: Counts(50, 30, 20) for d in history(STABLE)}  # 100 a day, 20% detractors
    spiking = dict(usual)
    spiking[TODAY] = usual[TODAY] + Counts(15, 5, 40)  # 60 more in five minutes, 40 of them detractors
    async with running_loop(settings, spec(settings, clock)) as run:
        await send(bootstrap, settings.topics.scores, [changed("channel:web", usual, T0)])
        await eventually(run.committed_at_least(1))
        clock.now = T0 + timedelta(minutes=5)
        await send(bootstrap, settings.topics.scores, [changed("channel:web", spiking, clock.now)])
        await eventually(run.committed_at_least(2))
        (event,) = await alerts_in(bootstrap, settings.topics.alerts, expect=1)
    assert isinstance(event, AlertFired) and event.rule == "incident"
    assert event.explanation.detail["recent_n"] == 60 and event.explanation.detail["recent_detractors"] == 40
    assert event.explanation.p_value is not None and event.explanation.p_value < 1e-12


async def test_the_api_lists_acknowledges_and_silences(bootstrap: str, database_url: str, namespace: str) -> None:
    settings = settings_for(bootstrap, database_url, namespace, drop_enabled=True)
    await create_topics(settings)
    clock = Clock()
    app = create_app(settings)
    engine = make_engine(database_url)
    auth = await serve_in_process(app, engine)
    reader = await add_key(app, engine, ["alerts:read"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://alerts") as client:
        # a silence for region:* (every rule) before anything drops
        far = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        reply = await client.post(
            "/v1/silences",
            json={
                "matcher": "region:*",
                "starts_at": (T0 - timedelta(hours=1)).isoformat(),
                "ends_at": far,
                "comment": "migration",
            },
            headers=auth,
        )
        assert reply.status_code == 201, reply.text
        silence = reply.json()
        bad = [
            {"matcher": "x", "ends_at": "2020-01-01T00:00:00Z"},  # over before it starts
            {"matcher": "a\x07b", "ends_at": far},
            {"matcher": "x", "ends_at": far, "rule": "vibes"},
            {"matcher": "x", "ends_at": "2031-01-01T00:00:00Z"},  # longer than 90 days
            {"matcher": "x"},
        ]
        for body in bad:
            answer = await client.post("/v1/silences", json=body, headers=auth)
            assert answer.status_code == 422 and answer.json()["code"] == "invalid_request", body
        assert (
            await client.post("/v1/silences", json={"matcher": "x", "ends_at": far}, headers=reader)
        ).status_code == 403

        async with running_loop(settings, spec(settings, clock)) as run:
            first = [changed(s, history(STABLE), T0) for s in ("channel:web", "region:eu")]
            worse = [changed(s, history(WORSE), T0 + timedelta(minutes=1)) for s in ("channel:web", "region:eu")]
            await send(bootstrap, settings.topics.scores, first)
            await eventually(run.committed_at_least(2))
            clock.now = T0 + timedelta(minutes=1)
            await send(bootstrap, settings.topics.scores, worse)
            await eventually(run.committed_at_least(4))
            (web,) = await alerts_in(bootstrap, settings.topics.alerts, expect=1)  # region:eu is silenced
            assert isinstance(web, AlertFired) and web.segment == "channel:web"

            async def both_recorded() -> bool:
                page = (await client.get("/v1/alerts", headers=reader)).json()
                return len(page["alerts"]) == 2

            await eventually(both_recorded)
            page = (await client.get("/v1/alerts", params={"rule": "drop", "limit": 1}, headers=reader)).json()
            assert len(page["alerts"]) == 1 and page["next_cursor"]
            rest = (await client.get("/v1/alerts", params={"cursor": page["next_cursor"]}, headers=reader)).json()
            assert {a["segment"] for a in page["alerts"] + rest["alerts"]} == {"channel:web", "region:eu"}
            eu = (await client.get("/v1/alerts", params={"segment": "region:eu"}, headers=reader)).json()["alerts"][0]
            assert eu["silence_id"] == silence["silence_id"] and eu["state"] == "firing"
            assert (await client.get("/v1/alerts", params={"state": "resolved"}, headers=reader)).json()["alerts"] == []
            for params in (
                {"state": "open"},
                {"rule": "vibes"},
                {"limit": "0"},
                {"cursor": "nope"},
                {"since": "yesterday"},
            ):
                answer = await client.get("/v1/alerts", params=params, headers=reader)
                assert answer.status_code == 422 and answer.json()["code"] == "invalid_request", params

            one = await client.get(f"/v1/alerts/{web.alert_id}", headers=reader)
            assert one.status_code == 200 and one.json()["explanation"]["summary"].startswith("NPS of channel:web fell")
            assert (await client.get("/v1/alerts/al_" + "0" * 32, headers=reader)).status_code == 404
            assert (await client.get("/v1/alerts/nope", headers=reader)).status_code == 422
            assert (
                await client.post(f"/v1/alerts/{web.alert_id}/ack", json={"by": "maria"}, headers=reader)
            ).status_code == 403
            acked = await client.post(
                f"/v1/alerts/{web.alert_id}/ack", json={"by": "maria", "note": "checkout fix deploying"}, headers=auth
            )
            assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "maria"
            assert (
                await client.post(f"/v1/alerts/{web.alert_id}/ack", json={"by": ""}, headers=auth)
            ).status_code == 422
            assert (
                await client.post("/v1/alerts/al_" + "0" * 32 + "/ack", json={"by": "maria"}, headers=auth)
            ).status_code == 404

            # the outbox is flushed by the loop: AlertAcknowledged follows AlertFired
            events = await alerts_in(bootstrap, settings.topics.alerts, expect=2)
            assert isinstance(events[1], AlertAcknowledged) and events[1].note == "checkout fix deploying"

            listed = (await client.get("/v1/silences", headers=reader)).json()["silences"]
            assert [s["silence_id"] for s in listed] == [silence["silence_id"]] and listed[0]["comment"] == "migration"
            assert (await client.delete(f"/v1/silences/{silence['silence_id']}", headers=auth)).status_code == 204
            assert (await client.delete(f"/v1/silences/{silence['silence_id']}", headers=auth)).status_code == 404
            assert (await client.get("/v1/silences", headers=reader)).json()["silences"] == []
    await engine.dispose()


async def test_the_migration_keeps_v1_alerts_and_goes_back(database_url: str) -> None:
    """alerts_0003 moves a v1 alert's numbers into its explanation and back; delivery_0002 renames
    subscriptions to the v1 alert types."""
    engine = make_engine(database_url)
    config = alembic_config(SERVICE_SCHEMAS["alerts"], database_url, TEST_PSEUDONYM_SECRET)
    delivery = alembic_config(
        SERVICE_SCHEMAS["delivery"], database_url, TEST_PSEUDONYM_SECRET, Sealer.of(TEST_SECRETS_KEY)
    )
    try:
        await asyncio.to_thread(command.downgrade, config, "alerts_0002")
        await asyncio.to_thread(command.downgrade, delivery, "delivery_0001")
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    """INSERT INTO alerts.alerts (alert_id, segment, as_of, current_nps, baseline_nps, current_n,
                           baseline_n, fired_at) VALUES ('al_old', 'plan:pro', '2026-11-20', 4, 40.5, 100, 320, :at)"""
                ),
                {"at": T0},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO alerts.segment_states (segment, firing, alert_id, last_computed_at) "
                    "VALUES ('plan:pro', true, 'al_old', :at)"
                ),
                {"at": T0},
            )
            await conn.execute(
                sa.text(
                    """INSERT INTO delivery.subscriptions (subscription_id, url, events, format, status, secret,
                           created_at, updated_at)
                       VALUES ('wh_1', 'https://x.example', ARRAY['ScoreDropDetected', 'TicketOpened'], 'standard',
                               'active', 's', :at, :at)"""
                ),
                {"at": T0},
            )
        await asyncio.to_thread(command.upgrade, config, "head")
        await asyncio.to_thread(command.upgrade, delivery, "head")
        async with engine.connect() as conn:
            row = (await conn.execute(sa.text("SELECT rule, explanation FROM alerts.alerts"))).one()
            events = (await conn.execute(sa.text("SELECT events FROM delivery.subscriptions"))).scalar_one()
            seen = (await conn.execute(sa.text("SELECT segment, last_arrival_at FROM alerts.segments"))).one()
        assert row.rule == "drop" and row.explanation["drop_points"] == pytest.approx(36.5)
        assert row.explanation["current_n"] == 100 and "fell 36.5 points" in row.explanation["summary"]
        assert events == ["AlertFired", "TicketOpened"] and tuple(seen) == ("plan:pro", None)

        await asyncio.to_thread(command.downgrade, config, "alerts_0002")
        await asyncio.to_thread(command.downgrade, delivery, "delivery_0001")
        async with engine.connect() as conn:
            old = (await conn.execute(sa.text("SELECT current_nps, baseline_n, as_of FROM alerts.alerts"))).one()
            state = (await conn.execute(sa.text("SELECT firing, alert_id FROM alerts.segment_states"))).one()
            events = (await conn.execute(sa.text("SELECT events FROM delivery.subscriptions"))).scalar_one()
        assert tuple(old) == (4.0, 320, date(2026, 11, 20)) and tuple(state) == (True, "al_old")
        assert events == ["ScoreDropDetected", "TicketOpened"]
        await asyncio.to_thread(command.upgrade, config, "head")
        await asyncio.to_thread(command.upgrade, delivery, "head")
    finally:
        await engine.dispose()


async def nothing() -> None:
    """A round's other reads, left out."""


async def _insert_days(conn: Any, names: list[str], today: date, newest_ago: int, oldest_ago: int) -> None:
    """Each segment's days from `newest_ago` to `oldest_ago` days before today, counts differing by
    day and by segment (the i-th segment has i more detractors a day over its last week)."""
    for i, name in enumerate(names):
        await conn.execute(
            sa.text(
                "INSERT INTO alerts.days (segment, first_day, promoters, passives, detractors) "
                "SELECT :s, CAST(:today AS date) - CAST(:oldest AS integer), array_agg(5 + (d * :i) % 4 ORDER BY d DESC), "
                "array_agg(3 + d % 2 ORDER BY d DESC), "
                "array_agg(2 + (d + :i) % 3 + CASE WHEN d < 7 THEN :i ELSE 0 END ORDER BY d DESC) "
                "FROM generate_series(CAST(:newest AS integer), CAST(:oldest AS integer)) AS d"
            ),
            {"s": name, "today": today, "i": i, "newest": newest_ago, "oldest": oldest_ago},
        )


async def test_a_round_reading_its_segments_in_parts_works_out_what_one_read_does(database_url: str) -> None:
    """The first round of a day reads every segment's days a part at a time, the next part's
    query out while this part is worked out: any part size gives the same windows, tests and EWMAs."""
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    names = [f"parts{i}:v{i}" for i in range(7)]
    engine = make_engine(database_url)
    caches: list[dict[str, Any]] = []
    rounds: EvaluateRounds | None = None

    async def done() -> int:
        assert rounds is not None
        return rounds.chunk

    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await _insert_days(conn, names, today, 0, 83)
            seen = {name: Seen(now, now) for name in names}
            for chunk in (2, 3, 4, 100):
                rounds = EvaluateRounds(Rules(), Timing(), "t", 60.0, lambda: now, Due(), chunk=chunk)
                # `then` runs once the last part is read: every segment is in the cache by its answer.
                assert await rounds._refresh(conn, seen, today, done) == chunk
                caches.append(dict(rounds._cache))
            await transaction.rollback()
    finally:
        await engine.dispose()
    assert set(caches[0]) == set(names)
    assert caches[0] == caches[1] == caches[2] == caches[3]
    assert all(c.ewma is not None and c.drop is not None and c.current.n > 0 for c in caches[0].values())
    assert len({c.current for c in caches[0].values()}) > 1  # the segments' data differ, and stay theirs


async def test_a_new_day_works_out_the_days_kept_as_a_new_read_would(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a new day a segment without a newer score is not read again: its days kept are worked
    out moved by a day, and give what a process reading them afresh that day gives, a day after
    the day read on (a score from a clock ahead) included. A newer score reads the segment again."""
    now = datetime.now(UTC).replace(microsecond=0)
    today, tomorrow = now.date(), now.date() + timedelta(days=1)
    names = [f"moved{i}:v{i}" for i in range(4)]
    engine = make_engine(database_url)
    read: list[str] = []
    days_of = repository.days_of

    async def counting(conn: Any, segments: Any) -> Any:
        read.extend(segments)
        return await days_of(conn, segments)

    monkeypatch.setattr(repository, "days_of", counting)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await _insert_days(conn, names, today, -1, 90)  # tomorrow to 90 ago: every window's edges move
            seen = {name: Seen(now, now) for name in names}
            kept = EvaluateRounds(Rules(), Timing(), "t", 60.0, lambda: now, Due())
            await kept._refresh(conn, seen, today, nothing)
            on_the_day = dict(kept._cache)
            read.clear()
            await kept._refresh(conn, seen, tomorrow, nothing)
            assert read == []  # no newer score: nothing read again
            moved = dict(kept._cache)
            afresh = EvaluateRounds(Rules(), Timing(), "t", 60.0, lambda: now, Due())
            await afresh._refresh(conn, seen, tomorrow, nothing)
            assert sorted(read) == names
            newer = {**seen, names[0]: Seen(now + timedelta(minutes=1), now)}
            read.clear()
            await kept._refresh(conn, newer, tomorrow, nothing)
            assert read == [names[0]]  # a newer score: read again
            await transaction.rollback()
    finally:
        await engine.dispose()

    def stats(cache: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
        return {s: (c.key, c.current, c.baseline, c.drop, c.ewma) for s, c in cache.items()}

    assert stats(moved) == stats(afresh._cache)
    assert all(on_the_day[s].current != moved[s].current for s in names)  # the windows did move
    assert all(c.ewma is not None and c.drop is not None for c in moved.values())
    assert kept._cache[names[0]].key == (tomorrow, now + timedelta(minutes=1))


async def test_the_days_read_are_the_stored_rows_whichever_segments_are_asked(database_url: str) -> None:
    """days_of sends each segment's arrays as bytes: whatever the order, case, accents or gaps of
    the segments asked, each gets exactly its stored days (a day after today too), an absent one none."""
    today = datetime.now(UTC).date()
    names = ["days:Zeta", "days:alpha", "days:Ärger", "days:Émile", "days:zz", "days:1"]
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await _insert_days(conn, names, today, -1, 90)
            rows = await conn.execute(
                sa.text(
                    "SELECT segment, first_day + CAST(x.i AS integer) - 1, x.p, x.pa, x.d FROM alerts.days, "
                    "unnest(promoters, passives, detractors) WITH ORDINALITY AS x(p, pa, d, i) "
                    "WHERE segment LIKE 'days:%'"
                )
            )
            stored: dict[str, set[tuple[Any, ...]]] = {}
            for segment, *day in rows:
                stored.setdefault(segment, set()).add(tuple(day))
            asked = [
                sorted(names),
                names[::-1],
                [names[4], names[1], names[5]],
                [names[0], names[3]],
                [names[2]],
                [*names[:2], "days:absent"],
            ]
            found = [await repository.days_of(conn, part) for part in asked]
            await transaction.rollback()
    finally:
        await engine.dispose()
    assert len(stored) == len(names) and all(len(days) == 92 for days in stored.values())  # 90 ago .. -1
    for part, days in zip(asked, found, strict=True):
        assert set(days) == set(part) - {"days:absent"}
        for segment, read in days.items():
            held = zip(read.promoters, read.passives, read.detractors, strict=True)
            assert {(read.first + timedelta(days=i), *day) for i, day in enumerate(held)} == stored[segment]


async def test_the_migration_packs_each_segment_s_days_into_one_row_and_back(database_url: str) -> None:
    """alerts_0004: a segment's daily rows become one row of its days from the first to the last,
    0 on the days between without a row; going back gives the rows with responses again."""
    engine = make_engine(database_url)
    config = alembic_config(SERVICE_SCHEMAS["alerts"], database_url, TEST_PSEUDONYM_SECRET)
    rows = {
        ("pack:a", TODAY - timedelta(days=3)): (1, 2, 3),
        ("pack:a", TODAY): (4, 0, 0),  # two days between without a row
        ("pack:b", TODAY - timedelta(days=90)): (0, 0, 7),
        ("pack:b", TODAY - timedelta(days=89)): (5, 5, 5),
    }

    async def daily() -> dict[tuple[str, date], tuple[int, ...]]:
        async with engine.connect() as conn:
            found = await conn.execute(
                sa.text("SELECT segment, day, promoters, passives, detractors FROM alerts.daily")
            )
            return {(r[0], r[1]): tuple(r[2:]) for r in found}

    try:
        await asyncio.to_thread(command.downgrade, config, "alerts_0003")
        async with engine.begin() as conn:
            for (segment, day), counts in rows.items():
                await conn.execute(
                    sa.text("INSERT INTO alerts.daily VALUES (:s, :day, :p, :pa, :d)"),
                    {"s": segment, "day": day, "p": counts[0], "pa": counts[1], "d": counts[2]},
                )
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.connect() as conn:
            held = await repository.days_of(conn, ["pack:a", "pack:b"])
        a, b = held["pack:a"], held["pack:b"]
        assert (a.first, list(a.promoters), list(a.passives), list(a.detractors)) == (
            TODAY - timedelta(days=3),
            [1, 0, 0, 4],
            [2, 0, 0, 0],
            [3, 0, 0, 0],
        )
        assert (b.first, list(b.promoters), list(b.passives), list(b.detractors)) == (
            TODAY - timedelta(days=90),
            [0, 5],
            [0, 5],
            [7, 5],
        )
        await asyncio.to_thread(command.downgrade, config, "alerts_0003")
        assert await daily() == rows
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
        await engine.dispose()


async def test_prune_keeps_the_days_from_the_cut_on_and_never_waits_for_a_batch(database_url: str) -> None:
    """A row reaching past the cut loses its days before it; a row with none from the cut on goes;
    a row after it is left as it is. A row a mirror batch holds is left to the next prune, at once:
    waiting for it could deadlock a round with the batch."""
    engine = make_engine(database_url)
    cut = TODAY - timedelta(days=91)
    names = ["prune:across", "prune:before", "prune:after", "prune:held"]
    try:
        async with engine.begin() as conn:
            await _insert_days(conn, ["prune:across", "prune:held"], TODAY, 0, 95)  # 95 .. 0 days ago
            await _insert_days(conn, ["prune:before"], TODAY, 92, 99)
            await _insert_days(conn, ["prune:after"], TODAY, 0, 91)
            before = await repository.days_of(conn, names)
        async with engine.connect() as batch, engine.connect() as conn:
            await batch.begin()
            await batch.execute(sa.text("SELECT 1 FROM alerts.days WHERE segment = 'prune:held' FOR UPDATE"))
            async with conn.begin():
                await asyncio.wait_for(repository.prune(conn, T0 - timedelta(days=2), cut), timeout=10)
            await batch.rollback()
        async with engine.connect() as conn:
            after = await repository.days_of(conn, names)
    finally:
        await engine.dispose()
    assert set(after) == {"prune:across", "prune:after", "prune:held"}
    across, was = after["prune:across"], before["prune:across"]
    assert across.first == cut and len(across.promoters) == 92
    assert (list(across.promoters), list(across.detractors)) == (list(was.promoters[4:]), list(was.detractors[4:]))
    assert after["prune:after"] == before["prune:after"] and after["prune:held"] == before["prune:held"]


async def test_two_consumers_mirroring_one_new_segment_at_once_keep_both_scores_days(database_url: str) -> None:
    """During a rebalance the old owner of a partition may still apply a batch while the new owner
    applies the next. A new segment has no `segments` row to lock: the second to write its days
    must not overwrite the first's, so it is rolled back and applied anew (the loop retries
    RetryBatch), on top of them."""
    older = {TODAY - timedelta(days=9): Counts(1, 0, 0), TODAY - timedelta(days=2): Counts(0, 1, 0)}
    newer = {TODAY - timedelta(days=1): Counts(0, 0, 1)}
    first_score = changed("race:new", older, T0)
    window = WindowCounts(first_day=TODAY - timedelta(days=2), last_day=TODAY, promoters=0, passives=0, detractors=0)
    second_score = ScoreChanged(  # a span of the last three days only: the older days must stay
        segment="race:new",
        as_of=TODAY,
        current=window,
        baseline=window,
        computed_at=T0 + timedelta(seconds=1),
        daily_first_day=TODAY - timedelta(days=2),
        daily=[DayCounts(day=d, **_counts(c)) for d, c in newer.items()],
    )
    mirror = MirrorScores(Due())
    engine = make_engine(database_url)
    try:
        await second_owner_retries(
            engine,
            lambda conn: mirror(conn, [Message(first_score, "t", 0, 0, 0)]),
            lambda conn: mirror(conn, [Message(second_score, "t", 0, 1, 0)]),
        )
        async with engine.begin() as conn:  # the retry
            await mirror(conn, [Message(second_score, "t", 0, 1, 0)])
        async with engine.connect() as conn:
            held = (await repository.days_of(conn, ["race:new"]))["race:new"]
    finally:
        await engine.dispose()
    dense = zip(held.promoters, held.passives, held.detractors, strict=True)
    found = {held.first + timedelta(days=i): Counts(*day) for i, day in enumerate(dense) if any(day)}
    assert found == {TODAY - timedelta(days=9): Counts(1, 0, 0), TODAY - timedelta(days=1): Counts(0, 0, 1)}


_MIRRORED = ("m:a", "m:B", "m:ç")
D0 = TODAY - timedelta(days=20)


@st.composite
def _scores(draw: st.DrawFn) -> list[ScoreChanged]:
    """ScoreChanged of a few segments, each its own moment, spans over a few days (their edges
    meet often), days in and around the span (a day outside it is ignored), zero days too."""
    moments = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True))
    out = []
    for moment in moments:
        last = D0 + timedelta(days=draw(st.integers(0, 6)))
        first = last - timedelta(days=draw(st.integers(0, 4)))
        days = draw(
            st.dictionaries(
                st.integers(-2, (last - first).days + 2),
                st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
                max_size=9,
            )
        )
        window = WindowCounts(first_day=first, last_day=last, promoters=0, passives=0, detractors=0)
        out.append(
            ScoreChanged(
                segment=draw(st.sampled_from(_MIRRORED)),
                as_of=last,
                current=window,
                baseline=window,
                computed_at=T0 + timedelta(seconds=moment),
                daily_first_day=draw(st.sampled_from([first, None])),
                daily=[
                    DayCounts(day=first + timedelta(days=i), promoters=p, passives=pa, detractors=d)
                    for i, (p, pa, d) in sorted(days.items())
                ],
            )
        )
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_the_days_held_are_each_applied_score_s_span_in_turn(data: st.DataObject, database_url: str) -> None:
    """ScoreChanged delivered at least once, in any order and batches of any size: each segment's
    days held are what applying, in turn, each score newer than the last one judged gives (its span
    made exactly its days), stored from its first day with responses to its last; what arrived is
    each applied score's change over its span, but for a segment's first days held (its history)."""
    scores = data.draw(_scores(), label="scores")
    again = data.draw(st.lists(st.sampled_from(scores), max_size=4), label="redelivered")
    delivered = data.draw(st.permutations([*scores, *again]), label="delivered")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(delivered) - 1))), label="cuts"))
    batches = [delivered[a:b] for a, b in zip([0, *cuts], [*cuts, len(delivered)], strict=True)]
    model: dict[str, dict[date, tuple[int, int, int]]] = {}
    arrived: dict[str, Counts] = {}
    judged: dict[str, datetime] = {}
    for batch in batches:
        latest: dict[str, ScoreChanged] = {}
        for score in batch:
            if score.segment not in latest or score.computed_at > latest[score.segment].computed_at:
                latest[score.segment] = score
        for segment, score in latest.items():
            if segment in judged and score.computed_at <= judged[segment]:
                continue
            judged[segment] = score.computed_at
            first = score.daily_first_day or score.baseline.first_day
            held = model.get(segment, {})
            days = {d: c for d, c in held.items() if not first <= d <= score.as_of}
            for day in score.daily or []:
                if first <= day.day <= score.as_of and day.counts.n:
                    days[day.day] = (day.promoters, day.passives, day.detractors)
            before = sum((Counts(*c) for d, c in held.items() if first <= d <= score.as_of), Counts())
            if before.n:
                now = sum((Counts(*c) for d, c in days.items() if first <= d <= score.as_of), Counts())
                arrived[segment] = arrived.get(segment, Counts()) + now - before
            model[segment] = days
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE alerts.days, alerts.segments, alerts.arrivals"))
        mirror = MirrorScores(Due())
        for offset, batch in enumerate(batches):
            async with engine.begin() as conn:
                await mirror(conn, [Message(score, "scores", 0, offset, 0) for score in batch])
        async with engine.connect() as conn:
            held = await repository.days_of(conn, _MIRRORED)
            rows = await conn.execute(
                sa.text(
                    "SELECT segment, sum(promoters), sum(passives), sum(detractors) FROM alerts.arrivals GROUP BY segment"
                )
            )
            arrivals = {r[0]: Counts(*map(int, r[1:])) for r in rows}
    finally:
        await engine.dispose()
    found = {}
    for segment, row in held.items():
        dense = list(zip(row.promoters, row.passives, row.detractors, strict=True))
        assert any(dense[0]) and any(dense[-1])  # stored from the first day with responses to the last
        found[segment] = {row.first + timedelta(days=i): day for i, day in enumerate(dense) if any(day)}
    assert found == {segment: days for segment, days in model.items() if days}
    assert {s: c for s, c in arrivals.items() if c != Counts()} == {s: c for s, c in arrived.items() if c != Counts()}
