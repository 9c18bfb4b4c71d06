"""Follow-up through the real loop, broker and database: one follow-up per response, one
ticket per detractor, whatever is redelivered."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from followup_service.bootstrap import spec
from followup_service.settings import FollowUpSettings
from followup_service.tickets.domain import ticket_id
from shared.db import make_engine
from shared.events import RespondentErased, ResponseSubmitted, followup_events, ticket_events
from tests.helpers import (
    FAST_GROUP,
    TEST_PSEUDONYM_SECRET,
    create_topics,
    eventually,
    keyed,
    produce,
    read_topic,
    running_loop,
    started_producer,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def settings_for(bootstrap: str, database_url: str, namespace: str, group: str = "nps-followup") -> FollowUpSettings:
    return FollowUpSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,  # type: ignore[arg-type]
        topic_namespace=namespace,
        topic_partitions=3,
        group_id=group,
        pseudonym_secret=TEST_PSEUDONYM_SECRET,  # type: ignore[arg-type]
        **FAST_GROUP,
    )


def event(rid: str, score: int, comment: str | None = None) -> ResponseSubmitted:
    return ResponseSubmitted(
        response_id=rid,
        respondent_id=f"u-{rid}",
        score=score,
        comment=comment,
        channel="web",
        answered_at=NOW,
        submitted_at=NOW,
    )


async def test_one_follow_up_per_response_and_one_ticket_per_detractor(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    responses = [event("p", 10), event("pa", 7), event("d1", 6, "too slow"), event("d2", 0), event("d1", 6, "too slow")]
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed(responses))
        async with running_loop(settings, spec(settings)) as run:
            await eventually(run.committed_at_least(len(responses)))
    # Redelivery of everything (a new group reads from offset 0): nothing new may appear.
    replay = settings_for(bootstrap, database_url, namespace, group="followup-replay")
    async with running_loop(replay, spec(replay)) as run:
        await eventually(run.committed_at_least(len(responses)))

    tickets = [
        ticket_events.validate_json(r.value) for r in await read_topic(bootstrap, settings.topics.tickets, expect=2)
    ]
    assert sorted(t.response_id for t in tickets) == ["d1", "d2"]
    by_response = {t.response_id: t for t in tickets}
    assert by_response["d1"].ticket_id == ticket_id("d1")
    assert by_response["d1"].comment == "too slow" and by_response["d1"].score == 6

    followups = [
        followup_events.validate_json(r.value) for r in await read_topic(bootstrap, settings.topics.followups, expect=4)
    ]
    assert Counter((f.response_id, f.kind) for f in followups) == Counter(
        {("p", "referral"): 1, ("pa", "education"): 1, ("d1", "ticket"): 1, ("d2", "ticket"): 1}
    )

    engine = make_engine(database_url)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM followup.followups"))).scalar_one() == 4
        assert (await conn.execute(sa.text("SELECT count(*) FROM followup.tickets"))).scalar_one() == 2
        assert (await conn.execute(sa.text("SELECT count(*) FROM followup.outbox"))).scalar_one() == 0  # all sent
    await engine.dispose()


async def test_erasure_clears_what_follow_up_holds_and_late_events_do_not_bring_it_back(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    phone, who = "call me on 555-0199", "jane-7741"
    before = NOW - timedelta(minutes=5)

    def said(rid: str, score: int, at: datetime) -> ResponseSubmitted:
        return ResponseSubmitted(
            response_id=rid, respondent_id=who, score=score, comment=phone, answered_at=at, submitted_at=at
        )

    erased = RespondentErased(erasure_id="e1", respondent_id=who, requested_at=NOW)
    first = [said("j1", 2, before), said("j2", 9, before)]
    late = [said("j3", 1, before), said("j1", 2, before)]  # submitted before the erasure, arriving after it
    after = [said("j4", 4, NOW + timedelta(minutes=1))]  # a new response after the erasure: routed
    async with started_producer(bootstrap) as producer, running_loop(settings, spec(settings)) as run:
        sent = 0
        for wave in (first, [erased], late, after):  # one batch each: routed first, then erased
            await produce(producer, settings.topics.responses, [(who.encode(), e.to_bytes()) for e in wave])
            sent += len(wave)
            await eventually(run.committed_at_least(sent))

    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = {
                r.response_id: r
                for r in await conn.execute(
                    sa.text("SELECT response_id, respondent_id, status, reason, ticket_id FROM followup.followups")
                )
            }
            assert set(rows) == {"j1", "j2", "j3", "j4"}
            # j3 came late for an erased person: never routed, recorded without them
            assert (rows["j3"].respondent_id, rows["j3"].status, rows["j3"].reason, rows["j3"].ticket_id) == (
                None,
                "suppressed",
                "erased",
                None,
            )
            assert rows["j1"].respondent_id is None and rows["j2"].respondent_id is None
            assert rows["j4"].respondent_id == who
            tickets = {
                r.response_id: r
                for r in await conn.execute(sa.text("SELECT response_id, respondent_id, comment FROM followup.tickets"))
            }
            assert set(tickets) == {"j1", "j4"}
            assert tickets["j1"].respondent_id is None and tickets["j1"].comment is None
            assert tickets["j4"].comment == phone
            # Nothing of the erased responses is left in any text column of the schema.
            for table, column in (await conn.execute(sa.text(TEXT_COLUMNS))).all():
                found = await conn.execute(
                    sa.text(
                        f"SELECT count(*) FROM followup.{table} t JOIN followup.followups f USING (response_id) "
                        f"WHERE f.response_id IN ('j1', 'j2', 'j3') AND (t.{column} = :who OR t.{column} = :phone)"
                    )
                    if table != "followups"
                    else sa.text(
                        f"SELECT count(*) FROM followup.followups t "
                        f"WHERE t.response_id IN ('j1', 'j2', 'j3') AND (t.{column} = :who OR t.{column} = :phone)"
                    ),
                    {"who": who, "phone": phone},
                )
                assert found.scalar_one() == 0, (table, column)
    finally:
        await engine.dispose()


TEXT_COLUMNS = """
    SELECT table_name, column_name FROM information_schema.columns
    WHERE table_schema = 'followup' AND data_type = 'text' AND table_name IN ('followups', 'tickets')
"""


async def test_an_anonymous_detractor_counts_but_gets_no_ticket_and_no_message(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    """A page's anonymous key vouches for nobody: the default policy's first rule routes its answers
    to nothing (suppressed, rule `anonymous`); the same score vouched for gets its ticket."""
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    anonymous = event("anon", 1).model_copy(update={"identity": "anonymous"})
    verified = event("vouched", 1).model_copy(update={"identity": "verified"})
    async with started_producer(bootstrap) as producer:
        await produce(producer, settings.topics.responses, keyed([anonymous, verified]))
        async with running_loop(settings, spec(settings)) as run:
            await eventually(run.committed_at_least(2))
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(sa.text("SELECT response_id, kind, status, reason, rule FROM followup.followups"))
            ).all()
            tickets = (await conn.execute(sa.text("SELECT response_id FROM followup.tickets"))).scalars().all()
    finally:
        await engine.dispose()
    assert {r.response_id: (r.kind, r.status, r.reason, r.rule) for r in rows} == {
        "anon": ("none", "suppressed", "policy_none", "anonymous"),
        "vouched": ("ticket", "created", None, "detractors"),
    }
    assert tickets == ["vouched"]
