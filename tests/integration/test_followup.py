"""Follow-up through the real loop, broker and database: one follow-up per response, one
ticket per detractor, whatever is redelivered."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from followup_service.bootstrap import spec
from followup_service.domain import ticket_id
from followup_service.settings import FollowUpSettings
from shared.db import make_engine
from shared.events import ResponseSubmitted, followup_events, ticket_events
from tests.helpers import FAST_GROUP, create_topics, eventually, produce, read_topic, running_loop, started_producer

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def settings_for(bootstrap: str, database_url: str, namespace: str, group: str = "nps-followup") -> FollowUpSettings:
    return FollowUpSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,  # type: ignore[arg-type]
        topic_namespace=namespace,
        topic_partitions=3,
        group_id=group,
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
        await produce(
            producer, settings.topics.responses, [(e.respondent_id.encode(), e.to_bytes()) for e in responses]
        )
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
