"""Contact rules through follow-up's real loop, API and database: a person asked again too soon
is not messaged (suppressed, with when they may be), an opted-out person is never messaged but
still gets a ticket, and product apps can ask whether to show the prompt."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from followup_service.bootstrap import create_app, spec
from shared.events import ResponseSubmitted
from tests.helpers import add_key, create_topics, eventually, produce, running_loop, serve_in_process, started_producer
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration


async def test_fatigue_and_opt_out_hold_back_messages_and_the_contact_api_says_why(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    ann, bob = f"{run}-ann", f"{run}-bob"

    def response(rid: str, who: str, score: int) -> ResponseSubmitted:
        return ResponseSubmitted(
            response_id=f"{run}-{rid}", respondent_id=who, score=score, answered_at=now, submitted_at=now
        )

    app = create_app(settings)
    async with (
        started_producer(bootstrap) as producer,
        running_loop(settings, spec(settings, app.state.policy)) as loop,
    ):
        admin = await serve_in_process(app, loop.engine)
        reader = await add_key(app, loop.engine, ["followups:read"])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://f", headers=admin
        ) as client:
            opted = await client.post(f"/v1/respondents/{bob}/opt-out")
            assert opted.status_code == 200 and opted.json() == {
                "respondent_id": bob,
                "opted_out": True,
                "changed": True,
            }
            assert (await client.post(f"/v1/respondents/{bob}/opt-out")).json()["changed"] is False

            first = [response("a1", ann, 10), response("a2", ann, 9), response("b1", bob, 10), response("b2", bob, 1)]
            await produce(
                producer, settings.topics.responses, [(e.respondent_id.encode(), e.to_bytes()) for e in first]
            )

            async def rows() -> dict[str, tuple[str, str, str | None, datetime | None]]:
                async with loop.engine.connect() as conn:
                    found = await conn.execute(
                        sa.text(
                            "SELECT response_id, kind, status, reason, eligible_at FROM followup.followups "
                            "WHERE response_id LIKE :r"
                        ),
                        {"r": f"{run}-%"},
                    )
                    return {
                        r.response_id.removeprefix(f"{run}-"): (r.kind, r.status, r.reason, r.eligible_at)
                        for r in found
                    }

            async def routed() -> bool:
                return len(await rows()) == 4

            await eventually(routed)
            found = await rows()
            assert found["a1"][:3] == ("referral", "created", None)
            assert found["a2"][:3] == ("referral", "suppressed", "throttled")
            assert found["a2"][3] is not None and found["a2"][3] > now + timedelta(days=29)
            assert found["b1"][:3] == ("referral", "suppressed", "opted_out")
            assert found["b2"][:3] == ("ticket", "created", None)  # support still hears from bob

            answer = (await client.get(f"/v1/respondents/{ann}/contact")).json()
            assert (answer["may_survey"], answer["may_contact"]) == (False, False)
            assert set(answer["reasons"]) == {"surveyed_recently", "throttled"}
            assert answer["survey_eligible_at"] > (now + timedelta(days=89)).isoformat()
            barred = (await client.get(f"/v1/respondents/{bob}/contact")).json()
            assert (barred["may_contact"], barred["contact_eligible_at"], "opted_out" in barred["reasons"]) == (
                False,
                None,
                True,
            )
            stranger = (await client.get(f"/v1/respondents/{run}-new/contact")).json()
            assert (stranger["may_survey"], stranger["may_contact"], stranger["reasons"]) == (True, True, [])

            assert (await client.delete(f"/v1/respondents/{bob}/opt-out")).json()["opted_out"] is False
            assert "opted_out" not in (await client.get(f"/v1/respondents/{bob}/contact")).json()["reasons"]

            for method, path in (("GET", f"/v1/respondents/{ann}/contact"), ("POST", f"/v1/respondents/{ann}/opt-out")):
                refused = await client.request(method, path, headers=reader)
                assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
            bad = await client.get("/v1/respondents/a%00b/contact")
            assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"

        async with loop.engine.connect() as conn:
            actions = [
                r[0]
                for r in await conn.execute(
                    sa.text("SELECT action FROM auth.audit_log WHERE action LIKE 'respondent.opted%' ORDER BY id")
                )
            ]
            stored = "\n".join(str(r) for r in await conn.execute(sa.text("SELECT * FROM followup.opt_outs")))
        assert actions == ["respondent.opted_out", "respondent.opted_in"]
        assert bob not in stored  # only the keyed hash is kept
