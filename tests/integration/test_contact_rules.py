"""Contact rules through follow-up's real loop, API and database: a person asked again too soon
is not messaged (suppressed, with when they may be), an opted-out person is never messaged but
still gets a ticket, and product apps can ask whether to show the prompt."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from followup_service.bootstrap import create_app, spec
from shared.events import contact_events
from tests.helpers import Run, create_topics, eventually, read_topic, served
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration


async def test_fatigue_and_opt_out_hold_back_messages_and_the_contact_api_says_why(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    run = Run()
    now = run.now
    ann, bob = run.of("ann"), run.of("bob")

    app = create_app(settings)
    async with served(app, settings, spec(settings, app.state.policy)) as service:
        loop, client = service.loop, service.client
        reader = await service.key(["followups:read"])
        opted = await client.post(f"/v1/respondents/{bob}/opt-out")
        assert opted.status_code == 200 and opted.json() == {
            "respondent_id": bob,
            "opted_out": True,
            "changed": True,
        }
        assert (await client.post(f"/v1/respondents/{bob}/opt-out")).json()["changed"] is False

        first = [
            run.submitted("a1", 10, "ann"),
            run.submitted("a2", 9, "ann"),
            run.submitted("b1", 10, "bob"),
            run.submitted("b2", 1, "bob"),
        ]
        await service.publish(settings.topics.responses, first)

        async def rows() -> dict[str, tuple[str, str, str | None, datetime | None]]:
            async with loop.engine.connect() as conn:
                found = await conn.execute(
                    sa.text(
                        "SELECT response_id, kind, status, reason, eligible_at FROM followup.followups "
                        "WHERE response_id LIKE :r"
                    ),
                    {"r": f"{run.id}-%"},
                )
                return {
                    r.response_id.removeprefix(f"{run.id}-"): (r.kind, r.status, r.reason, r.eligible_at) for r in found
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
        stranger = (await client.get(f"/v1/respondents/{run.of('new')}/contact")).json()
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
    # Each change (not the repeat) reaches nps.contact.v1, for ingest's GET /v1/prompt.
    records = await read_topic(bootstrap, settings.topics.contact, expect=2)
    changes = [contact_events.validate_json(r.value) for r in records]  # type: ignore[arg-type]
    assert [(c.respondent_id, c.opted_out) for c in changes] == [(bob, True), (bob, False)]
    assert all(r.key == bob.encode() for r in records)
