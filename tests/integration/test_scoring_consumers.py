"""Scoring's two consumer loops, the counts and the response rates, in processes of their own
(`NPS_SCORING_CONSUMERS`): each runs only its loop, and together they answer as one process does."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from scoring_service.bootstrap import create_app
from scoring_service.settings import ScoringSettings
from services.infra import create_topics
from shared.auth import KeyStore, hash_api_key, new_api_key
from shared.db import make_engine
from shared.events import InvitationSent, ResponseSubmitted
from tests.helpers import eventually, keyed, produce, service_settings, started_producer

pytestmark = pytest.mark.integration


async def test_the_counts_and_the_rates_run_apart_and_answer_as_one(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    base = service_settings(bootstrap, database_url, namespace, ScoringSettings)
    await create_topics(base)
    counts = create_app(base.model_copy(update={"consumers": ["counts"]}))
    rates = create_app(base.model_copy(update={"consumers": ["rates"]}))
    key = new_api_key()
    engine = make_engine(database_url)
    await KeyStore(engine).create("tests-split", hash_api_key(key), ["admin"], actor="tests")
    await engine.dispose()
    now = datetime.now(UTC)
    asked = InvitationSent(invitation_id="i-1", respondent_id="u-1", channel="email", invited_at=now, recorded_at=now)
    answered = ResponseSubmitted(
        response_id="r-1", respondent_id="u-1", score=10, channel="email", invitation_id="i-1",
        answered_at=now, submitted_at=now,
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    async with counts.router.lifespan_context(counts), rates.router.lifespan_context(rates):
        # Each process runs the one loop it was given, in its own group.
        assert (counts.state.resources.loop.service, dict(counts.state.resources.more)) == ("scoring", {})
        assert (rates.state.resources.loop.service, dict(rates.state.resources.more)) == ("rates", {})
        async with started_producer(bootstrap) as producer:
            await produce(producer, base.topics.invitations, keyed([asked]))
            await produce(producer, base.topics.responses, keyed([answered]))
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scoring", headers=headers)
            for app in (counts, rates)
        ]
        try:

            async def both_answer_the_whole() -> bool:
                for client in clients:  # either process serves the whole query API
                    score = (await client.get("/v1/nps", params={"segment": "channel:email"})).json()
                    rate = (await client.get("/v1/response-rates", params={"segment": "channel:email"})).json()
                    if (score.get("n"), rate.get("invited"), rate.get("responded")) != (1, 1, 1):
                        return False
                return True

            await eventually(both_answer_the_whole, timeout=30, every=0.3)
            for client in clients:
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
        finally:
            for client in clients:
                await client.aclose()
