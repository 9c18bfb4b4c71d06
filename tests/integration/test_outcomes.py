"""Outcomes through follow-up's real loop, API and database: a person answering again records the
move and what their previous answer got; the report compares those followed up with those not;
erasure takes a person's moves out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from followup_service.bootstrap import create_app, spec
from shared.events import RespondentErased, ResponseSubmitted
from tests.helpers import create_topics, eventually, served
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration


async def test_answers_again_are_compared_by_the_follow_up_the_previous_answer_got(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    start = datetime.now(UTC) - timedelta(days=20)
    answers = [("ann", 2), ("ben", 10), ("cat", 8), ("ann", 8), ("ben", 10), ("cat", 8), ("cat", 9)]
    events = [
        ResponseSubmitted(
            response_id=f"{run}-{i}",
            respondent_id=f"{run}-{who}",
            score=score,
            channel="web",
            answered_at=start + timedelta(days=i),
            submitted_at=start + timedelta(days=i),
        )
        for i, (who, score) in enumerate(answers)
    ]
    app = create_app(settings)
    async with served(app, settings, spec(settings, app.state.policy)) as service:
        client = service.client
        await service.publish(settings.topics.responses, events)

        async def report() -> dict:  # type: ignore[type-arg]
            return (await client.get("/v1/outcomes", params={"window": "30d", "segment": "channel:web"})).json()

        async def all_moves() -> bool:
            return sum(g["resurveyed"] for g in (await report())["groups"]) == 4

        await eventually(all_moves)
        result = await report()
        groups = {g["followup"]: g for g in result["groups"]}
        assert set(groups) == {"ticket", "referral", "education", "none"}
        assert (
            groups["ticket"]["detractors_moved_up"]["moved"] == 1 and groups["ticket"]["nps_change"]["points"] == 100.0
        )
        assert groups["referral"]["nps_change"]["points"] == 0.0
        # cat's second 8 was throttled (no message): her move to a 9 counts as not followed up
        assert groups["none"]["passives_to_promoters"]["share"] == 1.0
        assert (result["followed_up"]["n"], result["followed_up"]["points"]) == (3, 33.33)
        assert (result["not_followed_up"]["n"], result["difference"]["points"]) == (1, -66.67)
        assert (await client.get("/v1/outcomes", params={"segment": "channel:email"})).json()["groups"] == []
        for params in ({"window": "180"}, {"segment": "plan:pro"}, {"window": "0d"}):
            assert (await client.get("/v1/outcomes", params=params)).status_code == 422

        erased = RespondentErased(
            erasure_id=uuid.uuid4().hex, respondent_id=f"{run}-ann", requested_at=datetime.now(UTC)
        )
        await service.publish(settings.topics.responses, [erased])

        async def ann_gone() -> bool:
            return {g["followup"] for g in (await report())["groups"]} == {"referral", "education", "none"}

        await eventually(ann_gone)
