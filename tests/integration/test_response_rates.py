"""Response rates' exactness against the real PostgreSQL: whatever the delivery (duplicates,
redeliveries, an invitation after the response that answers it, a prompt's `dismissed` before its
`shown`, erasures before and after a person's events, any batch boundaries), the stored daily
counts equal a from-scratch recompute of what the rules say stays; and the API serves them."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring_service import metrics
from scoring_service.bootstrap import create_app, rates_spec
from scoring_service.domain import segment_key
from scoring_service.handlers import PublishChanges, rate_gauges
from scoring_service.rates import repository as rates
from scoring_service.rates.domain import Answer, Invited, recompute
from scoring_service.settings import ScoringSettings
from shared.consumer import Message
from shared.db import make_engine
from shared.events import InvitationSent, RespondentErased, ResponseSubmitted, ScoreChanged, score_events
from shared.nps import Rate
from shared.outbox import Outgoing, unpack
from shared.pseudonyms import Pseudonyms
from shared.segments import OVERALL
from shared.windows import DayRange
from shared.wire import decode_rate_event
from tests.conftest import fresh_database
from tests.helpers import TEST_PSEUDONYM_SECRET, serve_in_process, service_settings, truncate

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
WINDOW = timedelta(days=14)
PEOPLE = ("p0", "p1", "p2")
SURVEYS = ("q1", "q2", None)
KEYS = Pseudonyms(TEST_PSEUDONYM_SECRET)


@pytest.fixture(scope="module")
def rates_db(pg_admin_url: str) -> Iterator[str]:
    yield fresh_database(pg_admin_url)


def settings_for(database_url: str) -> ScoringSettings:
    return service_settings("127.0.0.1:1", database_url, "rates", ScoringSettings, match_window_days=14)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


invitation_st = st.fixed_dictionaries(
    {
        "person": st.sampled_from(PEOPLE),
        "survey": st.sampled_from(SURVEYS),
        "channel": st.sampled_from(("email", "web")),
        "hours": st.integers(0, 24 * 40),
        "dismissed": st.booleans(),  # a widget's prompt: shown, then dismissed (one invitation)
    }
)
answer_st = st.fixed_dictionaries(
    {
        "person": st.sampled_from(PEOPLE),
        "survey": st.sampled_from(SURVEYS),
        "hours": st.integers(0, 24 * 45),
        "names": st.one_of(st.none(), st.integers(0, 30), st.just(-1)),  # an invitation by index; -1: unknown
    }
)
# At the very moment of one of the invitations: just before ingest took it (it stays) or a second
# after (it goes), with whatever that person had before and after.
erasure_st = st.fixed_dictionaries({"of": st.integers(0, 29), "after": st.booleans()})


def events_of(
    invitations: list[dict[str, Any]], answers: list[dict[str, Any]], erasures: list[dict[str, Any]]
) -> list[Any]:
    made: list[Any] = []
    for i, inv in enumerate(invitations):
        shown = InvitationSent(
            invitation_id=f"i{i}", respondent_id=inv["person"], survey_id=inv["survey"], channel=inv["channel"],
            invited_at=at(inv["hours"]), attributes={"plan": "pro" if i % 2 else "free"},
            how="shown" if inv["dismissed"] else "invited", recorded_at=at(inv["hours"]) + timedelta(seconds=1),
        )  # fmt: skip
        made.append(shown)
        if inv["dismissed"]:
            made.append(shown.model_copy(update={"how": "dismissed", "recorded_at": at(inv["hours"] + 1)}))
    for j, ans in enumerate(answers):
        names = ans["names"]
        named = None if names is None else ("missing" if names < 0 else f"i{names}")
        made.append(
            ResponseSubmitted(
                response_id=f"r{j}",
                respondent_id=ans["person"],
                score=7,
                survey_id=ans["survey"],
                answered_at=at(ans["hours"]),
                submitted_at=at(ans["hours"]) + timedelta(seconds=1),
                invitation_id=named,
            )
        )
    for k, erasure in enumerate(erasures):
        of = invitations[erasure["of"] % len(invitations)]
        requested = at(of["hours"]) + timedelta(seconds=2 if erasure["after"] else 0)
        made.append(RespondentErased(erasure_id=f"e{k}", respondent_id=of["person"], requested_at=requested))
    return made


def expected(events: list[Any]) -> dict[tuple[str, date], Rate]:
    """What the rules say stays: a person's events taken at or before their latest erasure go; of
    each invitation or response, any copy that stays makes it stay (copies share what counts)."""
    erased: dict[str, datetime] = {}
    for e in events:
        if isinstance(e, RespondentErased):
            erased[e.respondent_id] = max(erased.get(e.respondent_id, e.requested_at), e.requested_at)

    def stays(person: str, taken: datetime) -> bool:
        return person not in erased or taken > erased[person]

    invitations: dict[str, Invited] = {}
    answers: dict[str, Answer] = {}
    for e in events:
        if isinstance(e, InvitationSent) and stays(e.respondent_id, e.recorded_at):
            segments = (OVERALL, segment_key("channel", e.channel or ""), *([segment_key("survey_id", e.survey_id)] if e.survey_id else []), segment_key("plan", e.attributes["plan"]))  # fmt: skip
            invitations.setdefault(
                e.invitation_id,
                Invited(e.invitation_id, KEYS.key(e.respondent_id), e.survey_id or "", e.invited_at,
                        e.invited_at.date(), segments, e.recorded_at),
            )  # fmt: skip
        elif isinstance(e, ResponseSubmitted) and stays(e.respondent_id, e.submitted_at):
            answers.setdefault(
                e.response_id,
                Answer(e.response_id, KEYS.key(e.respondent_id), e.survey_id or "", e.answered_at, e.invitation_id, e.submitted_at),
            )  # fmt: skip
    return recompute(invitations.values(), answers.values(), WINDOW)


async def delivered(database_url: str, events: list[Any], rng: random.Random) -> dict[tuple[str, date], Rate]:
    """The events, a quarter of them twice, shuffled, in batches of 1 to 12, each batch in its own
    transaction as the consumer loop runs it; then what the tables hold."""
    handler = rates_spec(settings_for(database_url)).handler
    stream = events + rng.sample(events, len(events) // 4)
    rng.shuffle(stream)
    engine = make_engine(database_url)
    try:
        offset = 0
        while offset < len(stream):
            size = rng.randint(1, 12)
            chunk = stream[offset : offset + size]
            batch = [Message(decode_rate_event(e.to_bytes()), "t", 0, offset + n, 0) for n, e in enumerate(chunk)]
            async with engine.begin() as conn:
                await handler(conn, batch)
            offset += size
        async with engine.connect() as conn:
            counts = await rates.all_daily(conn)
            invitations, answers = await rates.stored(conn)
        # The stored rows themselves recompute to the counts (nothing counted that is not kept).
        assert {k: v for k, v in recompute(invitations, answers, WINDOW).items()} == counts
        return counts
    finally:
        await engine.dispose()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    st.lists(invitation_st, min_size=1, max_size=30),
    st.lists(answer_st, max_size=25),
    st.lists(erasure_st, max_size=2),
    st.randoms(use_true_random=False),
)
def test_counted_rates_equal_a_recompute_under_any_delivery(
    rates_db: str, invitations: list[dict[str, Any]], answers: list[dict[str, Any]], erasures: list[dict[str, Any]],
    rng: random.Random,
) -> None:  # fmt: skip
    asyncio.run(
        truncate(
            rates_db,
            "scoring",
            ("rate_invitations", "rate_answers", "rate_daily", "rate_state", "erasures", "segments"),
        )
    )
    events = events_of(invitations, answers, erasures)
    counts = asyncio.run(delivered(rates_db, events, rng))
    assert counts == expected(events)


async def test_a_prompt_dismissed_after_the_person_s_erasure_stays_whatever_the_order(rates_db: str) -> None:
    """Found by the property test: the prompt's `shown` was taken before the erasure, its `dismissed`
    after; the invitation stays (the dismissed copy is the person's anew), in every order and batching."""
    shown = [{"person": "p0", "survey": "q1", "channel": "email", "hours": 24, "dismissed": True}]
    answer = [{"person": "p0", "survey": "q1", "hours": 24, "names": None}]  # answered at once: erased with it
    events = events_of(shown, answer, [{"of": 0, "after": True}])  # erased 2 s after the shown, before the dismissed
    want = expected(events)
    assert want[("all", date(2026, 11, 2))] == Rate(1, 0)  # still invited, no longer answered
    for seed in range(12):
        await truncate(
            rates_db,
            "scoring",
            ("rate_invitations", "rate_answers", "rate_daily", "rate_state", "erasures", "segments"),
        )
        assert await delivered(rates_db, events, random.Random(seed)) == want, seed


async def in_order(database_url: str, batches: list[list[Any]]) -> dict[tuple[str, date], Rate]:
    """The batches as given, each in its own transaction; then the counts stored."""
    handler = rates_spec(settings_for(database_url)).handler
    engine = make_engine(database_url)
    try:
        for n, events in enumerate(batches):
            async with engine.begin() as conn:
                await handler(conn, [Message(decode_rate_event(e.to_bytes()), "t", 0, n, 0) for e in events])
        async with engine.connect() as conn:
            return await rates.all_daily(conn)
    finally:
        await engine.dispose()


async def test_an_answer_picks_the_invitation_it_names_when_that_arrives_later(rates_db: str) -> None:
    """The named invitation, of another survey and sent after the answer (outside any window), is the
    answer's pick once it arrives: the answered invitation before it is no longer answered."""
    await truncate(
        rates_db, "scoring", ("rate_invitations", "rate_answers", "rate_daily", "rate_state", "erasures", "segments")
    )
    events = events_of(
        [{"person": "p0", "survey": "q1", "channel": "email", "hours": 0, "dismissed": False},
         {"person": "p0", "survey": "q2", "channel": "email", "hours": 72, "dismissed": False}],
        [{"person": "p0", "survey": "q1", "hours": 2, "names": 1}],
        [],
    )  # fmt: skip
    first, named, answer = events
    want = expected(events)
    assert want[("all", date(2026, 11, 1))] == Rate(1, 0) and want[("all", date(2026, 11, 4))] == Rate(1, 1)
    # the answer before its named invitation: it picks i0 until i1 arrives
    assert await in_order(rates_db, [[first, answer], [named]]) == want


async def test_the_api_serves_rates_with_intervals_fatigue_and_beside_the_score(database_url: str) -> None:
    events = events_of(
        [{"person": p, "survey": "q1", "channel": "email", "hours": h, "dismissed": False}
         for p, h in (("p0", 0), ("p1", 0), ("p2", 1), ("p0", 30))],
        [{"person": "p0", "survey": "q1", "hours": 2, "names": None}, {"person": "p2", "survey": "q1", "hours": 3, "names": 2}],
        [],
    )  # fmt: skip
    await delivered(database_url, events, random.Random(7))
    app = create_app(settings_for(database_url), now=lambda: at(24 * 3))
    engine = make_engine(database_url)
    headers = await serve_in_process(app, engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scoring", headers=headers) as client:
        reply = await client.get("/v1/response-rates", params={"segment": "channel:email", "window": "7d"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["invited"], body["responded"]) == (4, 2) and body["rate"] == 0.5
        assert 0 < body["ci95"]["low"] < 0.5 < body["ci95"]["high"] < 1
        assert [(d["day"], d["invited"], d["responded"]) for d in body["series"] if d["invited"]] == [
            ("2026-11-01", 3, 2), ("2026-11-02", 1, 0)
        ]  # fmt: skip
        assert len(body["series"]) == 7 and body["series"][0]["rate"] is None
        assert body["fatigue"] == {"days": 30, "people": 3, "asked_twice": 1, "share": pytest.approx(1 / 3)}
        nps = (await client.get("/v1/nps", params={"segment": "channel:email", "window": "7d"})).json()
        assert nps["response_rate"]["invited"] == 4 and nps["response_rate"]["rate"] == 0.5
        nobody = (await client.get("/v1/nps", params={"segment": "channel:sms", "window": "7d"})).json()
        assert nobody["response_rate"] is None
        for params in ({"window": "0d"}, {"segment": "nope"}, {"as_of": "2999-01-01"}, {"window": "abc"}):
            bad = await client.get("/v1/response-rates", params=params)
            assert bad.status_code == 422 and bad.json()["errors"], (params, bad.text)
    # The gauges of the configured segments (NPS_SCORING_METRIC_SEGMENTS) say the same.
    async with engine.connect() as conn:
        await rate_gauges(conn, ["channel:email", "channel:sms"], DayRange(date(2026, 10, 29), date(2026, 11, 4)))
    assert metrics.SEGMENT_INVITED.labels("channel:email")._value.get() == 4
    assert metrics.SEGMENT_RESPONSE_RATE.labels("channel:email")._value.get() == 0.5
    assert metrics.SEGMENT_ASKED_TWICE.labels("channel:email")._value.get() == pytest.approx(1 / 3)
    assert math.isnan(metrics.SEGMENT_RESPONSE_RATE.labels("channel:sms")._value.get())
    await engine.dispose()


async def published_scores(conn: Any) -> dict[str, ScoreChanged]:
    """The ScoreChanged events in scoring's outbox, the newest per segment."""
    rows = await conn.execute(sa.text("SELECT topic, key, value, frames FROM scoring.outbox ORDER BY id"))
    found: dict[str, ScoreChanged] = {}
    for r in rows:
        for item in unpack(r.topic, r.value) if r.frames else [Outgoing(r.topic, r.key, bytes(r.value))]:
            event = score_events.validate_json(item.value)
            found[event.segment] = event
    return found


async def test_changed_rates_go_out_in_the_segment_s_score_changed_for_alerts(rates_db: str) -> None:
    """The rates consumer marks the segments whose rates moved; scoring's next ScoreChanged of each
    carries its days with invitations (what alerts' response_rate rule reads), also when erasure
    left it none."""
    tables = ("rate_invitations", "rate_answers", "rate_daily", "rate_state", "segment_state", "erasures", "segments")
    await truncate(rates_db, "scoring", (*tables, "outbox"))
    events = events_of(
        [{"person": p, "survey": "q1", "channel": "email", "hours": h, "dismissed": False}
         for p, h in (("p0", 0), ("p1", 0), ("p2", 30))],
        [{"person": "p0", "survey": "q1", "hours": 2, "names": None}],
        [],
    )  # fmt: skip
    await delivered(rates_db, events, random.Random(3))
    publish = PublishChanges("nps.scores.v1", 7, 28, interval_s=0.0, clock=lambda: at(24 * 3))
    engine = make_engine(rates_db)
    try:
        async with engine.begin() as conn:
            await publish(conn)
            sent = await published_scores(conn)
        assert {"all", "channel:email", "survey_id:q1"} <= set(sent)  # every segment the invitations count in
        for segment in ("all", "channel:email", "survey_id:q1"):
            rates_sent = sent[segment].rates
            assert rates_sent is not None
            assert [(d.day, d.invited, d.responded) for d in rates_sent] == [
                (date(2026, 11, 1), 2, 1), (date(2026, 11, 2), 1, 0)
            ]  # fmt: skip
        assert all(e.daily == [] for e in sent.values())  # no response counted by scoring here: only the rates moved
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM scoring.outbox"))
            await publish(conn)
            assert await published_scores(conn) == {}  # nothing moved since
        # The people erased: the segments' rates are none now, and say so.
        erased = [
            RespondentErased(erasure_id=f"e-{p}", respondent_id=p, requested_at=at(40)) for p in ("p0", "p1", "p2")
        ]
        await delivered(rates_db, erased, random.Random(4))
        async with engine.begin() as conn:
            await publish(conn)
            after = await published_scores(conn)
        assert set(after) == set(sent) and all(e.rates == [] for e in after.values())
    finally:
        await engine.dispose()
