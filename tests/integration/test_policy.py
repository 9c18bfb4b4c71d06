"""Follow-up routed by a policy file through the real loop, broker and database: custom actions,
ticket priorities, history rules, the rule and version recorded and published; the explain API;
and a bad policy refusing the start."""

from __future__ import annotations

import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from followup_service.bootstrap import create_app, spec
from followup_service.tickets.domain import ticket_id
from services.embedded import free_port
from shared.events import FollowUpCreated, ResponseSubmitted, followup_events
from tests.helpers import (
    create_topics,
    eventually,
    nps,
    nps_env,
    nps_here,
    read_topic,
    served,
    start_service,
)
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration

POLICY = """
version: acme-7
rules:
  - name: enterprise-detractor-with-comment
    when: {category: detractor, attributes: {plan: enterprise}, comment: present}
    action: ticket
    priority: urgent
  - name: relapsed-promoter
    when: {category: detractor, history: {previous_category: promoter}}
    action: csm_call
  - name: detractors
    when: {category: detractor}
    action: ticket
  - name: passives
    when: {category: passive}
    action: thank_you
    template: thanks
  - name: promoters
    when: {category: promoter}
    action: referral
    template: ask
templates:
  thanks:
    en: {subject: "Thanks", text: "Your plan: {{ attributes.plan | upper }}"}
  ask:
    en: {subject: "Thank you for the {{ score }}!", text: "Tell a friend?", html: "<p>Tell a friend, {{ comment }}?</p>"}
"""


async def test_a_policy_file_decides_every_follow_up_and_is_recorded_on_it(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    settings = settings_for(bootstrap, database_url, namespace).model_copy(update={"policy": path})
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)

    def response(rid: str, who: str, score: int, **extra: object) -> ResponseSubmitted:
        return ResponseSubmitted.model_validate(
            {
                "response_id": f"{run}-{rid}",
                "respondent_id": f"{run}-{who}",
                "score": score,
                "answered_at": now,
                "submitted_at": now,
                **extra,
            }
        )

    first = [
        response("x1", "xena", 10),
        response("z1", "zed", 8),
        response("y1", "yuri", 3, comment="down again", attributes={"plan": "enterprise"}),
    ]
    later = [response("x2", "xena", 2)]  # xena was a promoter: now she relapsed
    app = create_app(settings)
    async with served(app, settings, spec(settings, app.state.policy)) as service:
        loop, client = service.loop, service.client
        await service.publish(settings.topics.responses, first)

        async def rows() -> dict[str, tuple[str, str | None, str | None]]:
            async with loop.engine.connect() as conn:
                found = await conn.execute(
                    sa.text(
                        "SELECT response_id, kind, rule, policy_version FROM followup.followups WHERE response_id LIKE :r"
                    ),
                    {"r": f"{run}-%"},
                )
                return {r.response_id.removeprefix(f"{run}-"): (r.kind, r.rule, r.policy_version) for r in found}

        async def routed(n: int) -> bool:
            return len(await rows()) == n

        await eventually(lambda: routed(3))
        await service.publish(settings.topics.responses, later)
        await eventually(lambda: routed(4))
        assert await rows() == {
            "x1": ("referral", "promoters", "acme-7"),
            "z1": ("thank_you", "passives", "acme-7"),  # its template failed: recorded, not published
            "y1": ("ticket", "enterprise-detractor-with-comment", "acme-7"),
            "x2": ("csm_call", "relapsed-promoter", "acme-7"),
        }
        async with loop.engine.connect() as conn:
            found = await conn.execute(sa.text("SELECT ticket_id, priority FROM followup.tickets"))
            tickets = {r.ticket_id: r.priority for r in found}
        assert tickets == {ticket_id(f"{run}-y1"): "urgent"}  # the relapse went to the CSM, not to support
        async with loop.engine.connect() as conn:
            found = await conn.execute(
                sa.text(
                    "SELECT response_id, status, reason, template FROM followup.followups WHERE response_id LIKE :r"
                ),
                {"r": f"{run}-%"},
            )
            messages = {r.response_id.removeprefix(f"{run}-"): (r.status, r.reason, r.template) for r in found}
        assert messages["x1"] == ("created", None, "ask")  # the message itself is in FollowUpCreated only
        assert messages["z1"][0] == "failed" and "template thanks (en)" in messages["z1"][1]

        explained = await client.post("/v1/policy/explain", json={"score": 1, "previous_score": 9})
        assert explained.status_code == 200, explained.text
        body = explained.json()
        assert (body["rule"], body["action"], body["policy_version"]) == ("relapsed-promoter", "csm_call", "acme-7")
        assert [s["rule"] for s in body["skipped"]] == ["enterprise-detractor-with-comment"]
        for bad in ({"score": 11}, {"score": "3"}, {"score": 3, "plan": "x"}, {}):
            refused = await client.post("/v1/policy/explain", json=bad)
            assert refused.status_code == 422 and refused.json()["code"] == "invalid_request", refused.text

    records = await read_topic(bootstrap, settings.topics.followups, expect=3)
    created = [followup_events.validate_json(r.value) for r in records]
    assert {(e.kind, e.rule, e.policy_version) for e in created if isinstance(e, FollowUpCreated)} == {
        ("referral", "promoters", "acme-7"),
        ("ticket", "enterprise-detractor-with-comment", "acme-7"),
        ("csm_call", "relapsed-promoter", "acme-7"),
    }
    referral = next(e for e in created if isinstance(e, FollowUpCreated) and e.kind == "referral")
    assert (referral.template, referral.locale, referral.subject, referral.body_text) == (
        "ask",
        "en",
        "Thank you for the 10!",
        "Tell a friend?",
    )


def test_a_bad_policy_keeps_the_service_from_starting_and_says_why(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "version: v\nrules:\n  - {name: everyone, action: ticket}\n  - {name: never, when: {category: promoter}, action: referral}\n"
    )
    refused = nps("followup", env=nps_env(DATABASE_URL=database_url, NPS_FOLLOWUP_POLICY=str(bad)), timeout=30)
    assert refused.returncode == 2
    assert f"{bad}: rule never, when: can never match: rule everyone before it matches everything" in refused.stderr
    checked = nps("followup", "policy", "check", str(bad), env=nps_env())
    assert checked.returncode == 1 and "rule never" in checked.stderr


async def test_sighup_reloads_a_good_policy_and_keeps_the_running_one_when_the_file_is_bad(
    tmp_path: Path, database_url: str, bootstrap: str, namespace: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    env = nps_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=namespace,
        NPS_FOLLOWUP_POLICY=str(path),
    )
    await create_topics(settings_for(bootstrap, database_url, namespace))
    created = nps_here("keys", "create", "policy-tests", "--scope", "followups:read", env=env)
    assert created.returncode == 0, created.stderr
    service = start_service("followup", env, tmp_path / "followup.log", free_port())
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    try:
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10) as client:

            async def version() -> str:
                return str((await client.post("/v1/policy/explain", json={"score": 5})).json()["policy_version"])

            assert await version() == "acme-7"
            path.write_text(POLICY.replace("acme-7", "acme-8"))
            service.process.send_signal(signal.SIGHUP)

            async def now_8() -> bool:
                return await version() == "acme-8"

            await eventually(now_8, timeout=10)
            path.write_text(POLICY.replace("acme-7", "acme-9").replace("action: csm_call", "action: Bad-Action"))
            service.process.send_signal(signal.SIGHUP)

            async def refused() -> bool:
                return "policy not reloaded, version acme-8 keeps running" in service.log.read_text()

            await eventually(refused, timeout=10)
            assert await version() == "acme-8"
            assert "rule relapsed-promoter, action" in service.log.read_text()
            exposed = (await client.get("/metrics")).text
            assert 'nps_followup_policy_reloads_total{outcome="refused"} 1.0' in exposed
            assert 'nps_followup_policy_reloads_total{outcome="reloaded"} 1.0' in exposed
    finally:
        assert service.stop() == 0
