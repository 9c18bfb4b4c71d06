"""The loop as a user sees it: HTTP in, scores and follow-ups out, tickets on Kafka."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from followup_service.routing.policy import DEFAULT_POLICY
from shared.events import (
    AlertAcknowledged,
    AlertFired,
    AlertResolved,
    FollowUpCreated,
    TicketOpened,
    TicketSlaBreached,
    alert_events,
    followup_events,
    ticket_events,
)
from tests.e2e.conftest import SERVICES, Loop
from tests.helpers import INVALID_BASICS, eventually, fuzz_openapi, nps_env, nps_here, read_topic, received, receiving
from tests.helpers import nps as nps_command

pytestmark = pytest.mark.e2e

TICKETS = "nps.tickets.v1"
ALERTS = "nps.alerts.v2"


async def post(client: httpx.AsyncClient, loop: Loop, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"{loop.urls['ingest']}/v1/responses", json=body, headers=loop.auth)


async def nps(client: httpx.AsyncClient, loop: Loop, **params: str) -> dict[str, Any]:
    reply = await client.get(f"{loop.urls['scoring']}/v1/nps", params=params, headers=loop.auth)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_responses_become_scores_follow_ups_and_exactly_one_ticket_per_detractor(loop: Loop) -> None:
    run = uuid.uuid4().hex[:8]  # an attribute unique to this test: its own segment
    scores = {"p1": 10, "p2": 9, "pa": 8, "d1": 6, "d2": 0}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, score in scores.items():
            body = {
                "response_id": f"{run}-{name}",
                "respondent_id": f"{run}-u-{name}",
                "score": score,
                "channel": "email",
                "comment": f"comment {name}",
                "attributes": {"run": run},
            }
            reply = await post(client, loop, body)
            assert reply.status_code == 202, reply.text
            assert reply.json() == {"response_id": f"{run}-{name}"}
            if name == "d1":  # the app retried this POST: it must count once, ticket once
                assert (await post(client, loop, body)).status_code == 202

        async def counted() -> bool:
            return (await nps(client, loop, window="7d", segment=f"run:{run}"))["n"] == 5

        await eventually(counted, timeout=20)
        score = await nps(client, loop, window="7d", segment=f"run:{run}")
        assert (score["promoters"], score["passives"], score["detractors"]) == (2, 1, 2)
        assert score["nps"] == pytest.approx(0.0)
        assert score["ci95"]["low"] == pytest.approx(-57.46, abs=0.01)  # adjusted Wald, as in the unit test
        assert score["ci95"]["high"] == pytest.approx(57.46, abs=0.01)
        assert (await nps(client, loop, window="30d", segment="channel:email"))["n"] >= 5

        async def routed() -> bool:
            replies = [
                await client.get(f"{loop.urls['followup']}/v1/followups/{run}-{n}", headers=loop.auth) for n in scores
            ]
            return all(r.status_code == 200 for r in replies)

        await eventually(routed, timeout=20)
        kinds = {
            n: (await client.get(f"{loop.urls['followup']}/v1/followups/{run}-{n}", headers=loop.auth)).json()["kind"]
            for n in scores
        }
        assert kinds == {"p1": "referral", "p2": "referral", "pa": "education", "d1": "ticket", "d2": "ticket"}

    records = await read_topic(loop.bootstrap, TICKETS, timeout=15, settle=2)
    mine = [ticket_events.validate_json(r.value) for r in records]
    mine = [t for t in mine if t.response_id.startswith(f"{run}-")]
    assert sorted(t.response_id for t in mine) == [f"{run}-d1", f"{run}-d2"]
    d1 = next(t for t in mine if t.response_id == f"{run}-d1")
    assert (d1.respondent_id, d1.score, d1.comment) == (f"{run}-u-d1", 6, "comment d1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        *INVALID_BASICS,
        ({"respondent_id": "u", "score": 7, "answered_at": "2999-01-01T00:00:00Z"}, "answered_at"),
        ({"respondent_id": "u", "score": 7, "answered_at": "last tuesday"}, "answered_at"),
    ],
)
async def test_bad_input_gets_422_naming_the_field(loop: Loop, body: dict[str, Any], field: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await post(client, loop, body)
    assert reply.status_code == 422
    problem = reply.json()
    assert problem["code"] == "invalid_request"
    assert field in [e["field"] for e in problem["errors"]]


async def test_bad_queries_get_422(loop: Loop) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for params in ({"window": "30"}, {"window": "0d"}, {"segment": "nope"}, {"segment": "Bad:x"}):
            reply = await client.get(f"{loop.urls['scoring']}/v1/nps", params=params, headers=loop.auth)
            assert reply.status_code == 422, params
            assert reply.json()["code"] == "invalid_query"


async def test_every_service_answers_health_readiness_and_metrics(loop: Loop) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for name in SERVICES:
            url = loop.urls[name]
            assert (await client.get(f"{url}/healthz")).json() == {"status": "ok"}
            ready = await client.get(f"{url}/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            metrics = await client.get(f"{url}/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            assert "nps_http_requests_total" in metrics.text
        scoring_metrics = (await client.get(f"{loop.urls['scoring']}/metrics")).text
        assert 'nps_consumer_events_total{outcome="processed",service="scoring"' in scoring_metrics


async def test_a_real_drop_fires_explained_is_acknowledged_and_resolves(loop: Loop) -> None:
    """Over HTTP: a stable history, then a drop; the alert fires with its explanation, is
    acknowledged, a silence is set and lifted, and after the recovery it resolves."""
    cohort = uuid.uuid4().hex[:8]
    segment = f"cohort:{cohort}"
    now = datetime.now(UTC)
    alerts = loop.urls["alerts"]

    async def answer(tag: str, count: int, score: int, days_ago: int = 0, comment: str | None = None) -> None:
        for i in range(count):
            body: dict[str, Any] = {
                "respondent_id": f"{cohort}-{tag}{i}",
                "score": score,
                "attributes": {"cohort": cohort},
            }
            if comment:
                body["comment"] = comment
            if days_ago:
                body["answered_at"] = (now - timedelta(days=days_ago)).isoformat()
            assert (await post(client, loop, body)).status_code == 202

    async with httpx.AsyncClient(timeout=10) as client:
        # history, two weeks ago (inside the 28 days before the last 7): 14 promoters, 4 passives, 2 detractors
        await answer("p", 14, 10, days_ago=14)
        await answer("n", 4, 8, days_ago=14)
        await answer("d", 2, 3, days_ago=14, comment="Too expensive for us")
        await answer("c", 20, 2, comment="My parcel never arrived")  # this week: detractors only, about delivery

        async def firing() -> list[dict[str, Any]]:
            reply = await client.get(f"{alerts}/v1/alerts", params={"segment": segment}, headers=loop.auth)
            return [a for a in reply.json()["alerts"] if a["rule"] == "drop"]

        async def fired() -> bool:
            return bool(await firing())

        await eventually(fired, timeout=30)
        (alert,) = await firing()
        x = alert["explanation"]
        assert x["baseline"]["nps"] == pytest.approx(60.0) and x["current"]["nps"] == pytest.approx(-100.0)
        assert x["drop_points"] == pytest.approx(160.0) and x["q_value"] < 0.05 and x["p_value"] <= x["q_value"]
        assert x["current"]["ci_low"] < x["current"]["ci_high"] and "fell 160.0 points" in x["summary"]
        # alerts asked the themes service (the key and URL `nps up` gave it) what drives the drop
        assert x["drivers"][0]["theme"] == "delivery" and x["drivers"][0]["share_before"] == 0.0
        assert "delivery: 0% \u2192 100% of detractor comments" in x["summary"]

        acked = await client.post(
            f"{alerts}/v1/alerts/{alert['alert_id']}/ack", json={"by": "e2e", "note": "looking"}, headers=loop.auth
        )
        assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "e2e"
        until = (now + timedelta(hours=1)).isoformat()
        silence = await client.post(
            f"{alerts}/v1/silences", json={"matcher": segment, "ends_at": until}, headers=loop.auth
        )
        assert silence.status_code == 201
        listed = (await client.get(f"{alerts}/v1/silences", headers=loop.auth)).json()["silences"]
        assert silence.json()["silence_id"] in {s["silence_id"] for s in listed}
        deleted = await client.delete(f"{alerts}/v1/silences/{silence.json()['silence_id']}", headers=loop.auth)
        assert deleted.status_code == 204

        await answer("r", 60, 10)  # recovery: 60 promoters this week, NPS 50 against 60: no real drop

        async def resolved() -> bool:
            reply = await client.get(f"{alerts}/v1/alerts/{alert['alert_id']}", headers=loop.auth)
            return bool(reply.json()["state"] == "resolved")

        await eventually(resolved, timeout=30)

    records = await read_topic(loop.bootstrap, ALERTS, expect=3)
    events = [e for e in (alert_events.validate_json(r.value) for r in records) if e.segment == segment]
    # (twenty detractors at once after a calm history is an incident too: that rule may fire beside it)
    assert {e.rule for e in events} <= {"drop", "incident"}
    mine = [e for e in events if e.alert_id == alert["alert_id"]]
    assert [type(e) for e in mine] == [AlertFired, AlertAcknowledged, AlertResolved]


async def test_themes_name_what_drives_a_drop(loop: Loop) -> None:
    """Over HTTP: a baseline of mixed comments, then detractors writing about delivery; the drivers
    of that segment name delivery first."""
    cohort = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    before = [
        (9, "Great support team, very helpful"),
        (10, "Easy to use and intuitive"),
        (3, "Too expensive for what it does"),
        (2, "The app crashes when I export"),
        (8, "Setup was quick"),
        (4, "Support took days to answer"),
    ]
    now_comments = ["Delivery took three weeks", "My parcel never arrived", "Shipping is a joke, still waiting"]
    async with httpx.AsyncClient(timeout=10) as client:
        for i, (score, comment) in enumerate(before * 2):
            body = {
                "respondent_id": f"{cohort}-b{i}",
                "score": score,
                "comment": comment,
                "attributes": {"cohort": cohort},
                "answered_at": (now - timedelta(days=10)).isoformat(),
            }
            assert (await post(client, loop, body)).status_code == 202
        for i, comment in enumerate(now_comments * 3):
            body = {"respondent_id": f"{cohort}-n{i}", "score": 1, "comment": comment, "attributes": {"cohort": cohort}}
            assert (await post(client, loop, body)).status_code == 202

        async def answered() -> dict[str, Any] | None:
            reply = await client.get(
                f"{loop.urls['themes']}/v1/themes/drivers",
                params={"segment": f"cohort:{cohort}", "window": "7d", "baseline": "28d"},
                headers=loop.auth,
            )
            assert reply.status_code == 200, reply.text
            found: dict[str, Any] = reply.json()
            return found if found["detractor_comments_now"] == 9 and found["detractor_comments_before"] == 6 else None

        async def counted() -> bool:
            return await answered() is not None

        await eventually(counted, timeout=30)
        drivers = await answered()
    assert drivers is not None
    first = drivers["drivers"][0]
    assert first["theme"] == "delivery" and first["detractor_share_now"] == pytest.approx(1.0)
    assert first["detractor_share_before"] == pytest.approx(0.0) and first["p_value"] < 0.001


async def test_a_killed_service_is_restarted_and_catches_up(loop: Loop) -> None:
    before = loop.children()
    assert set(before) == set(SERVICES)
    os.kill(before["scoring"], signal.SIGKILL)
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=10) as client:
        # Posted while scoring is down: ingest does not depend on it, and nothing is lost.
        reply = await post(client, loop, {"respondent_id": f"{run}-u", "score": 9, "attributes": {"run": run}})
        assert reply.status_code == 202

        async def restarted_and_counted() -> bool:
            try:
                score = await nps(client, loop, window="7d", segment=f"run:{run}")
            except (httpx.HTTPError, AssertionError):
                return False
            return bool(score["n"] == 1)

        await eventually(restarted_and_counted, timeout=60, every=0.5)
    after = loop.children()
    assert after["scoring"] != before["scoring"]
    assert {k: v for k, v in after.items() if k != "scoring"} == {k: v for k, v in before.items() if k != "scoring"}


async def test_five_concurrent_retries_count_once_and_route_once(loop: Loop) -> None:
    run = uuid.uuid4().hex[:8]
    body = {"response_id": f"{run}-r", "respondent_id": f"{run}-u", "score": 2, "attributes": {"run": run}}
    async with httpx.AsyncClient(timeout=10) as client:
        replies = await asyncio.gather(*(post(client, loop, body) for _ in range(5)))
        assert [r.status_code for r in replies] == [202] * 5
        assert {r.json()["response_id"] for r in replies} == {f"{run}-r"}

        async def counted() -> bool:
            return (await nps(client, loop, window="7d", segment=f"run:{run}"))["n"] >= 1

        async def routed() -> bool:
            return (
                await client.get(f"{loop.urls['followup']}/v1/followups/{run}-r", headers=loop.auth)
            ).status_code == 200

        await eventually(counted, timeout=20)
        await eventually(routed, timeout=20)
        await asyncio.sleep(1)  # let any duplicate reach the consumers before counting
        assert (await nps(client, loop, window="7d", segment=f"run:{run}"))["n"] == 1
        followup = (await client.get(f"{loop.urls['followup']}/v1/followups/{run}-r", headers=loop.auth)).json()
    assert followup["kind"] == "ticket"
    tickets = [ticket_events.validate_json(r.value) for r in await read_topic(loop.bootstrap, TICKETS, timeout=8)]
    assert [t.response_id for t in tickets].count(f"{run}-r") == 1


async def test_nps_keys_in_another_terminal_manages_the_running_loops_keys(loop: Loop) -> None:
    # As a user would: no DATABASE_URL exported, the same var/ folder as `make run`.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"NPS_VAR_DIR": str(loop.var_dir)}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = nps_command("keys", "create", name, env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    listed = nps_command("keys", "list", env=env)
    assert f"{name}\tresponses:write\tcreated" in listed.stdout and "active" in listed.stdout
    body = {"respondent_id": "cli-user", "score": 9}
    async with httpx.AsyncClient(timeout=10) as client:

        async def answered(status: int) -> bool:
            url = f"{loop.urls['ingest']}/v1/responses"
            reply = await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
            return reply.status_code == status

        await eventually(lambda: answered(202), timeout=15)
        assert nps_command("keys", "revoke", name, env=env).returncode == 0
        await eventually(lambda: answered(401), timeout=15)


async def test_nps_scoring_rebuild_in_another_terminal_finds_the_running_loop(loop: Loop) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    checked = nps_command("scoring", "rebuild", "--check", env={**env, "NPS_VAR_DIR": str(loop.var_dir)})
    assert checked.returncode == 0 and "0 differ" in checked.stdout, checked.stdout + checked.stderr
    # The replay wants an empty schema; this one is not: refused, having found both the database
    # and the broker of the running loop.
    refused = nps_command("scoring", "rebuild", "--replay", env={**env, "NPS_VAR_DIR": str(loop.var_dir)})
    assert refused.returncode == 2 and "empty" in refused.stdout, refused.stdout + refused.stderr
    elsewhere = nps_command("scoring", "rebuild", "--check", env={**env, "NPS_VAR_DIR": str(loop.var_dir / "none")})
    assert elsewhere.returncode == 2 and "make run" in elsewhere.stderr


@pytest.mark.parametrize("service", ["scoring", "followup", "alerts", "delivery", "themes"])
async def test_the_query_apis_never_answer_5xx_under_fuzzing(loop: Loop, service: str) -> None:
    operations = await asyncio.to_thread(fuzz_openapi, loop.urls[service], loop.auth, 8)
    assert operations >= 3  # its /v1 query, /healthz, /readyz


# The scope each operation needs, by service and method (every route but /healthz, /readyz, /metrics).
NEEDS = {
    ("ingest", "post"): "responses:write",
    ("ingest", "put"): "responses:write",
    ("ingest", "delete"): "respondents:erase",
    ("ingest", "get"): "admin",
    ("scoring", "get"): "scores:read",
    ("followup", "get"): "followups:read",
    ("followup", "patch"): "tickets:write",
    ("followup", "post"): "followups:read",  # the policy's explain: it changes nothing
    ("alerts", "get"): "alerts:read",
    ("alerts", "post"): "alerts:write",
    ("alerts", "delete"): "alerts:write",
    ("delivery", "get"): "webhooks:read",
    ("delivery", "post"): "webhooks:write",
    ("delivery", "patch"): "webhooks:write",
    ("delivery", "delete"): "webhooks:write",
    ("themes", "get"): "scores:read",
}


def needs(service: str, method: str, path: str) -> str:
    if service == "ingest" and path in ("/v1/invitations", "/v1/impressions"):
        return "invitations:write"
    if service == "ingest" and path == "/v1/prompt":
        return "contact:read"
    if service == "followup" and path.startswith("/v1/respondents/"):  # the contact rules
        return "contact:read" if method == "get" else "contact:write"
    if service == "followup" and path.startswith("/v1/referrals/") and method == "post":
        return "referrals:write"
    return NEEDS[(service, method)]


async def test_every_api_needs_a_key_with_its_scope(loop: Loop) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"NPS_VAR_DIR": str(loop.var_dir)}
    keys = {}
    readers = "scores:read,followups:read,alerts:read,webhooks:read"
    for role, scopes in (("reader", readers), ("writer", "responses:write")):
        created = nps_here("keys", "create", f"{role}-{uuid.uuid4().hex[:6]}", "--scope", scopes, env=env)
        assert created.returncode == 0, created.stderr
        keys[role] = {"Authorization": f"Bearer {created.stdout.strip()}"}
    page = nps_here(
        "keys",
        "create",
        f"page-{uuid.uuid4().hex[:6]}",
        "--publishable",
        "--origin",
        "https://app.example.com",
        env=env,
    )
    assert page.returncode == 0, page.stderr
    keys["page"] = {"Authorization": f"Bearer {page.stdout.split()[0]}"}
    granted = {"reader": set(readers.split(",")), "writer": {"responses:write"}, "page": set()}
    public = {
        ("ingest", "post", "/v1/responses"),
        ("ingest", "post", "/v1/impressions"),
        ("ingest", "get", "/v1/prompt"),
    }
    checked = 0
    async with httpx.AsyncClient(timeout=10) as client:
        await eventually(lambda: _known_everywhere(client, loop, keys.values()), timeout=20)
        for service in SERVICES:
            document = (await client.get(f"{loop.urls[service]}/openapi.json")).json()
            for path, operations in document["paths"].items():
                if path in ("/healthz", "/readyz"):
                    continue
                url = loop.urls[service] + re.sub(r"\{[^}]+\}", "x", path)
                for method in operations:
                    scope = needs(service, method, path)
                    anonymous = await client.request(method, url, json={})
                    assert anonymous.status_code == 401, (service, method, path, anonymous.text)
                    assert anonymous.headers["www-authenticate"] == "Bearer"
                    assert anonymous.json()["code"] == "missing_api_key"
                    assert operations[method]["security"] == [{"HTTPBearer": []}], (service, method, path)
                    for role, headers in keys.items():
                        reply = await client.request(method, url, json={}, headers=headers)
                        if role == "page" and (service, method, path) in public:
                            # Let through to its own checks (here: no Origin), never refused for a scope.
                            assert reply.json()["code"] != "insufficient_scope", reply.text
                        elif scope in granted[role]:
                            assert reply.status_code not in (401, 403), (service, method, path, role, reply.text)
                        else:
                            assert reply.status_code == 403, (service, method, path, role, reply.text)
                            assert reply.json()["code"] == "insufficient_scope"
                    checked += 1
    assert checked >= 43  # 9 ingest, 6 scoring, 11 follow-up, 6 alerts, 8 delivery, 3 themes


async def _known_everywhere(client: httpx.AsyncClient, loop: Loop, keys: Iterable[dict[str, str]]) -> bool:
    """Each service reloads its keys on its own every KEY_REFRESH_S (5 s): a new key is known once
    no service answers 401 to it (403, a missing scope, means known)."""
    probes = [
        ("POST", f"{loop.urls['ingest']}/v1/responses/validate"),
        ("GET", f"{loop.urls['scoring']}/v1/nps"),
        ("GET", f"{loop.urls['followup']}/v1/followups/x"),
        ("GET", f"{loop.urls['alerts']}/v1/alerts"),
        ("GET", f"{loop.urls['delivery']}/v1/webhooks"),
        ("GET", f"{loop.urls['themes']}/v1/themes"),
    ]
    for headers in keys:
        for method, url in probes:
            if (await client.request(method, url, json={}, headers=headers)).status_code == 401:
                return False
    return True


PERSONAL_SCHEMAS = ("auth", "ingest", "scoring", "followup", "alerts", "delivery")


async def test_personal_data_stays_out_of_logs_and_metrics_and_erasure_reaches_every_store(loop: Loop) -> None:
    run = uuid.uuid4().hex[:10]
    person, email, comment = f"person-{run}", f"jane.{run}@example.com", f"call me on 555-0199 ({run})"
    body = {
        "response_id": f"{run}-pd",
        "respondent_id": person,
        "score": 2,
        "comment": comment,
        "email": email,
        "attributes": {"run": run},
    }
    asked = {"invitation_id": f"{run}-inv", "respondent_id": person, "channel": "email",
             "invited_at": datetime.now(UTC).isoformat(), "attributes": {"run": run}}  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        invited = await client.post(
            f"{loop.urls['ingest']}/v1/invitations", json={"invitations": [asked]}, headers=loop.auth
        )
        assert invited.status_code == 202, invited.text
        assert (await post(client, loop, body)).status_code == 202

        async def rated(invited: int) -> bool:
            reply = await client.get(
                f"{loop.urls['scoring']}/v1/response-rates", params={"segment": f"run:{run}"}, headers=loop.auth
            )
            return bool(reply.json()["invited"] == invited)

        async def routed_and_counted() -> bool:
            followup = await client.get(f"{loop.urls['followup']}/v1/followups/{run}-pd", headers=loop.auth)
            themes = await client.get(
                f"{loop.urls['themes']}/v1/themes", params={"segment": f"run:{run}"}, headers=loop.auth
            )  # the themes consumer holds the comment (theme_comments) before the erasure
            return (
                followup.status_code == 200
                and (await nps(client, loop, segment=f"run:{run}"))["n"] == 1
                and themes.json()["commented"] == 1
                and await rated(1)
            )

        await eventually(routed_and_counted, timeout=20)
        for service in SERVICES:  # never a label, never a value
            exposed = (await client.get(f"{loop.urls[service]}/metrics")).text
            assert email not in exposed and comment not in exposed and person not in exposed, service
        logged = loop.output.read_text()  # every service logs here (make run's terminal), at INFO
        assert email not in logged and comment not in logged

        erased = await client.delete(f"{loop.urls['ingest']}/v1/respondents/{person}", headers=loop.auth)
        assert erased.status_code == 202, erased.text

        async def forgotten() -> bool:
            followup = await client.get(f"{loop.urls['followup']}/v1/followups/{run}-pd", headers=loop.auth)
            counted = (await nps(client, loop, segment=f"run:{run}"))["n"]
            return followup.json()["respondent_id"] is None and counted == 0 and await rated(0)

        await eventually(forgotten, timeout=20)

    url = (loop.var_dir / "database-url").read_text().strip()
    # Nor the plain SHA-256 of the id: anyone can compute it from a guessed id (keys are keyed).
    unkeyed = hashlib.sha256(person.encode()).hexdigest()
    # Ingest keeps the erasure event (it names the person) until every consumer has read it.
    await eventually(lambda: _nowhere_in_the_database(url, (person, email, comment, unkeyed)), timeout=20, every=0.5)
    assert await _found_in_the_database(url, (person, email, comment, unkeyed)) == []


async def _nowhere_in_the_database(url: str, secrets: Iterable[str]) -> bool:
    return await _found_in_the_database(url, secrets) == []


async def _found_in_the_database(url: str, secrets: Iterable[str]) -> list[str]:
    """Each (secret, table) where a secret is found in any column of any table of a service schema."""
    conn = await asyncpg.connect(url)
    found_in = []
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'",
            list(PERSONAL_SCHEMAS),
        )
        assert len(tables) >= 10
        for row in tables:
            table = f'"{row["table_schema"]}"."{row["table_name"]}"'
            binary = await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name = $2 AND data_type = 'bytea'",
                row["table_schema"],
                row["table_name"],
            )
            as_text = " || ".join(f"coalesce(encode(t.\"{c['column_name']}\", 'escape'), '')" for c in binary)
            for secret in secrets:
                found = await conn.fetchval(
                    f"SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0"
                    + (f" OR strpos({as_text}, $1) > 0" if binary else ""),
                    secret,
                )
                if found:
                    found_in.append(f"{secret!r} in {table}")
    finally:
        await conn.close()
    return found_in


def test_each_consumer_runs_as_a_static_group_member_with_a_stable_id(loop: Loop) -> None:
    """So that a consumer the launcher restarts takes its partitions back without a full rebalance."""
    for name, pid in loop.children().items():
        environ = dict(
            entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry
        )
        assert environ[f"NPS_{name.upper()}_CONSUMER_INSTANCE_ID"] == f"{name}-{socket.gethostname()}"


async def test_a_detractor_s_ticket_is_worked_to_resolved_and_support_tools_see_every_step(loop: Loop) -> None:
    run = uuid.uuid4().hex[:10]
    body = {
        "response_id": f"{run}-t", "respondent_id": f"person-{run}", "score": 1, "comment": "it keeps crashing",
        "channel": f"e2e-{run}",
    }  # fmt: skip
    async with receiving() as desk, httpx.AsyncClient(timeout=10, headers=loop.auth) as client:
        # A support desk subscribed by webhook to this channel's tickets (nps up allows a local URL).
        hook = await client.post(
            f"{loop.urls['delivery']}/v1/webhooks",
            json={"url": desk.url("/desk"), "events": ["TicketOpened", "TicketUpdated"],
                  "filters": {"segments": [f"channel:e2e-{run}"]}},
        )  # fmt: skip
        assert hook.status_code == 201, hook.text
        await asyncio.sleep(1.5)  # delivery's consumer reads subscriptions at its next batch
        assert (await post(client, loop, body)).status_code == 202
        ticket: dict[str, Any] = {}

        async def opened() -> bool:
            routed = await client.get(f"{loop.urls['followup']}/v1/followups/{run}-t")
            if routed.status_code != 200:
                return False
            ticket.update(routed.json())
            return True

        await eventually(opened, timeout=20)
        path = f"{loop.urls['followup']}/v1/tickets/{ticket['ticket_id']}"
        version = (await client.get(path)).headers["etag"]
        for status, extra in (("contacted", {"note": "called back"}), ("resolved", {"resolution": "fixed in 4.2"})):
            changed = await client.patch(path, json={"status": status, **extra}, headers={"If-Match": version})
            assert changed.status_code == 200, changed.text
            version = changed.headers["etag"]
        assert version == '"3"'

        async def published() -> bool:
            records = await read_topic(loop.bootstrap, "nps.tickets.v1", expect=None, timeout=3)
            mine = [(r.key, ticket_events.validate_json(r.value)) for r in records]
            # Every event of a ticket is keyed by it: one partition, in the order they happened.
            steps = [
                (getattr(e, "version", 1), e.type, getattr(e, "status", None))
                for key, e in mine
                if e.ticket_id == ticket["ticket_id"] and key == e.ticket_id.encode()
            ]
            return steps == [
                (1, "TicketOpened", None),
                (2, "TicketUpdated", "contacted"),
                (3, "TicketUpdated", "resolved"),
            ]

        await eventually(published, timeout=20, every=1.0)

        await eventually(received(desk, "/desk", 3), timeout=20)
        signed = [Webhook(hook.json()["secret"]).verify(c.body, c.headers) for c in desk.to("/desk")]
        assert [(b["type"], b["data"].get("status")) for b in signed] == [
            ("TicketOpened", None), ("TicketUpdated", "contacted"), ("TicketUpdated", "resolved")
        ]  # fmt: skip
        assert signed[0]["data"]["ticket_id"] == ticket["ticket_id"]
        assert signed[0]["data"]["comment"] == "it keeps crashing"


async def test_nps_followup_policy_reload_reaches_the_running_loop_s_follow_up(loop: Loop, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"NPS_VAR_DIR": str(loop.var_dir)}
    asked = nps_command("followup", "policy", "reload", env=env)
    assert asked.returncode == 0, asked.stderr

    async def reloaded() -> bool:
        return "policy reloaded from" in await asyncio.to_thread(loop.output.read_text)

    await eventually(reloaded, timeout=10)
    nowhere = nps_command("followup", "policy", "reload", env=env | {"NPS_VAR_DIR": str(tmp_path)})
    assert nowhere.returncode == 2 and "kill -HUP" in nowhere.stderr


async def test_the_default_policy_routes_a_mixed_set_exactly_as_documented(loop: Loop) -> None:
    """docs/followup.md: promoters to referral (with a code), passives to education, detractors to a
    ticket; each follow-up carries its message; everyone here is a new person, so nothing is held back."""
    run = uuid.uuid4().hex[:8]
    expected = {score: "ticket" if score <= 6 else "education" if score <= 8 else "referral" for score in range(11)}
    async with httpx.AsyncClient(timeout=10, headers=loop.auth) as client:
        for score in range(11):
            body = {"response_id": f"{run}-{score}", "respondent_id": f"{run}-p{score}", "score": score,
                    "comment": f"comment {score}", "channel": "web"}  # fmt: skip
            assert (await post(client, loop, body)).status_code == 202
        routed: dict[int, dict[str, Any]] = {}

        async def all_routed() -> bool:
            for score in set(range(11)) - routed.keys():
                reply = await client.get(f"{loop.urls['followup']}/v1/followups/{run}-{score}")
                if reply.status_code == 200:
                    routed[score] = reply.json()
            return len(routed) == 11

        await eventually(all_routed, timeout=30)
    assert {score: f["kind"] for score, f in routed.items()} == expected
    assert all((f["ticket_id"] is not None) == (score <= 6) for score, f in routed.items())

    async def published() -> list[FollowUpCreated]:
        records = await read_topic(loop.bootstrap, "nps.followups.v1", expect=None, timeout=3)
        events = [followup_events.validate_json(r.value) for r in records]
        return [e for e in events if isinstance(e, FollowUpCreated) and e.response_id.startswith(f"{run}-")]

    async def eleven() -> bool:
        return len(await published()) == 11

    await eventually(eleven, timeout=20, every=1.0)
    for event in await published():
        score = int(event.response_id.rsplit("-", 1)[1])
        assert (event.kind, event.rule, event.policy_version) == (
            expected[score],
            {"ticket": "detractors", "education": "passives", "referral": "promoters"}[expected[score]],
            "default-1",
        )
        assert event.subject and event.body_text and event.body_html and event.locale == "en"
        assert (event.referral_code is not None) == (expected[score] == "referral")
        if expected[score] == "ticket":
            assert f"comment {score}" in event.body_text


async def test_a_rule_with_a_short_sla_pages_support_through_the_tickets_topic(loop: Loop) -> None:
    """A policy reloaded into the running loop gives enterprise detractors a 2 s / 4 s SLA: their
    ticket misses both deadlines and TicketSlaBreached reaches the tickets topic, once each."""
    policy = loop.var_dir / "followup-policy.yaml"
    default = DEFAULT_POLICY.read_text()
    probe = (
        "  - name: sla-probe\n"
        "    when: {category: detractor, attributes: {plan: sla-probe}}\n"
        "    action: ticket\n"
        "    priority: urgent\n"
        "    sla: {first_contact: 2s, resolution: 4s}\n"
        "    template: detractor_reply\n"
    )
    assert "version: default-1\n" in default and "rules:\n" in default
    policy.write_text(
        default.replace("version: default-1\n", "version: e2e-sla-1\n").replace("rules:\n", f"rules:\n{probe}", 1)
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"NPS_VAR_DIR": str(loop.var_dir)}

    async def running(version: str) -> bool:
        output = await asyncio.to_thread(loop.output.read_text)
        reloads = [line for line in output.splitlines() if "policy reloaded from" in line]
        return bool(reloads) and f"version {version}," in reloads[-1]

    try:
        assert nps_command("followup", "policy", "reload", env=env).returncode == 0
        await eventually(lambda: running("e2e-sla-1"), timeout=10)
        run = uuid.uuid4().hex[:8]
        body = {"response_id": f"{run}-sla", "respondent_id": f"{run}-vip", "score": 2, "channel": "web",
                "attributes": {"plan": "sla-probe"}}  # fmt: skip
        async with httpx.AsyncClient(timeout=10, headers=loop.auth) as client:
            assert (await post(client, loop, body)).status_code == 202

        async def breaches() -> list[tuple[str, str]]:
            records = await read_topic(loop.bootstrap, "nps.tickets.v1", expect=None, timeout=2)
            events = [ticket_events.validate_json(r.value) for r in records]
            opened = {e.ticket_id for e in events if isinstance(e, TicketOpened) and e.response_id == f"{run}-sla"}
            return sorted(
                (e.deadline, e.priority) for e in events if isinstance(e, TicketSlaBreached) and e.ticket_id in opened
            )

        async def both() -> bool:
            return len(await breaches()) >= 2

        await eventually(both, timeout=30, every=1.0)
        await asyncio.sleep(2)  # two more ticks: each deadline is published once
        assert await breaches() == [("first_contact", "urgent"), ("resolution", "urgent")]
    finally:
        shutil.copyfile(DEFAULT_POLICY, policy)
        assert nps_command("followup", "policy", "reload", env=env).returncode == 0
        await eventually(lambda: running("default-1"), timeout=10)


def test_nps_status_reports_every_service_its_lag_and_what_waits(loop: Loop) -> None:
    """What an operator types first, against the running loop (its var/ folder and ports)."""
    ports = {f"NPS_{name.upper()}_PORT": url.rsplit(":", 1)[1] for name, url in loop.urls.items()}
    env = nps_env(NPS_VAR_DIR=str(loop.var_dir), **ports)
    done = nps_command("status", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in SERVICES:
        assert re.search(rf"^  {name}\s+ready\s+{re.escape(loop.urls[name])}/readyz$", done.stdout, re.M), name
    for group in (
        "nps-scoring",
        "nps-scoring-rates",
        "nps-scoring-themes",
        "nps-followup",
        "nps-alerts",
        "nps-delivery",
    ):
        assert re.search(rf"^  \w+\s+{group}: [\d,]+  \(", done.stdout, re.M), group
    for section in ("outbox rows waiting", "webhook deliveries pending", "alerts firing", "tickets active"):
        assert f"\n{section}" in done.stdout, section
    # One service not answering: named, and the exit code says so.
    down = nps_command("status", env={**env, "NPS_THEMES_PORT": "9"})
    assert down.returncode == 1 and re.search(r"^  themes\s+DOWN ", down.stdout, re.M), down.stdout


async def test_under_load_every_log_line_is_json_with_its_service_and_no_personal_data_in_any(loop: Loop) -> None:
    """Last in this file: its load leaves delivery a backlog the webhook tests would wait behind.
    Batches and single POSTs at once, some carrying a marker email and comment (in valid bodies,
    in bodies refused field by field, and with a request id); the loop logs at INFO, as in
    production: every line a service wrote is one JSON object, and no marker is in any of them."""
    run = uuid.uuid4().hex[:10]
    email, comment = f"marker.{run}@example.com", f"marker comment {run}: call 555-0142"
    marked = {"email": email, "comment": comment, "attributes": {"run": run}}

    def batch(b: int) -> dict[str, Any]:
        return {
            "responses": [
                {"response_id": f"{run}-{b}-{i}", "respondent_id": f"p-{run}-{i}", "score": i % 11, **marked}
                for i in range(500)
            ]
        }

    async with httpx.AsyncClient(timeout=30) as client:
        ingest, traced = loop.urls["ingest"], {**loop.auth, "X-Request-Id": f"trace-{run}"}
        batches = [client.post(f"{ingest}/v1/responses/batch", json=batch(b), headers=traced) for b in range(4)]
        singles = [
            client.post(
                f"{ingest}/v1/responses",
                json={"response_id": f"{run}-s{i}", "respondent_id": f"s-{run}-{i}", "score": i % 11, **marked},
                headers=traced,
            )
            for i in range(40)
        ]
        refused = [
            client.post(f"{ingest}/v1/responses", json={"respondent_id": email, "score": comment}, headers=traced),
            client.post(
                f"{ingest}/v1/responses",
                json={"respondent_id": "x", "score": 3, "email": email * 10},
                headers=loop.auth,
            ),
            client.post(
                f"{ingest}/v1/responses/batch",
                json={"responses": [{"score": 1, "comment": email}] * 3},
                headers=loop.auth,
            ),
        ]
        answers = await asyncio.gather(*batches, *singles, *refused)
        assert [a.status_code for a in answers] == [200] * 4 + [202] * 40 + [422, 422, 200]
        assert {a.headers["x-request-id"] for a in answers[:44]} == {f"trace-{run}"}

        async def all_counted() -> bool:
            return int((await nps(client, loop, segment=f"run:{run}"))["n"]) == 2_040

        await eventually(all_counted, timeout=60, every=0.5)
    logged = await asyncio.to_thread(loop.output.read_text)
    assert email not in logged and comment not in logged
    assert f"p-{run}" not in logged and f"s-{run}" not in logged  # nor respondent ids
    lines = [line for line in logged.splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    assert all({"time", "level", "service", "logger", "message"} <= set(line) for line in parsed)
    assert {line["service"] for line in parsed} >= {"launcher", *SERVICES}


async def test_invitations_and_answers_become_a_response_rate_beside_the_score(loop: Loop) -> None:
    """Who was asked (ingest), who answered (ingest), the rate (scoring), end to end over HTTP."""
    run = uuid.uuid4().hex[:8]
    asked_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    invitations = [
        {"invitation_id": f"{run}-i{n}", "respondent_id": f"{run}-u{n}", "survey_id": "q4", "channel": "email",
         "invited_at": asked_at, "attributes": {"run": run}}
        for n in range(4)
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        sent = await client.post(
            f"{loop.urls['ingest']}/v1/invitations", json={"invitations": invitations}, headers=loop.auth
        )
        assert sent.status_code == 202 and sent.json() == {"recorded": 4, "repeated": 0, "conflicts": []}, sent.text
        answers = [
            {"respondent_id": f"{run}-u0", "score": 9, "survey_id": "q4", "invitation_id": f"{run}-i0"},  # named
            {"respondent_id": f"{run}-u1", "score": 3, "survey_id": "q4"},  # its latest invitation to q4
            {"respondent_id": f"{run}-u9", "score": 7, "survey_id": "q4"},  # never invited: a score, no rate
        ]
        for body in answers:
            reply = await post(client, loop, {**body, "channel": "email", "attributes": {"run": run}})
            assert reply.status_code == 202, reply.text

        async def rated() -> dict[str, Any] | None:
            reply = await client.get(
                f"{loop.urls['scoring']}/v1/response-rates", params={"segment": f"run:{run}", "window": "7d"},
                headers=loop.auth,
            )  # fmt: skip
            body: dict[str, Any] = reply.json()
            scored = (await nps(client, loop, window="7d", segment=f"run:{run}"))["n"] == 3  # scoring's own group
            return body if body["responded"] == 2 and scored else None

        await eventually(lambda: _is_some(rated), timeout=20)
        rate = await rated()
        assert rate is not None and (rate["invited"], rate["rate"]) == (4, 0.5)
        assert 0 < rate["ci95"]["low"] < 0.5 < rate["ci95"]["high"] < 1
        score = await nps(client, loop, window="7d", segment=f"run:{run}")
        assert score["n"] == 3 and score["response_rate"]["invited"] == 4 and score["response_rate"]["responded"] == 2

    # The rates reach alerts in the segment's ScoreChanged, for its response_rate rule.
    async def mirrored() -> bool:
        conn = await asyncpg.connect((loop.var_dir / "database-url").read_text().strip())
        try:
            row = await conn.fetchrow(
                "SELECT (SELECT sum(x) FROM unnest(invited) x) AS invited, "
                "(SELECT sum(x) FROM unnest(responded) x) AS responded FROM alerts.rate_days WHERE segment = $1",
                f"run:{run}",
            )
        finally:
            await conn.close()
        return row is not None and (row["invited"], row["responded"]) == (4, 2)

    await eventually(mirrored, timeout=20)


async def test_a_fallen_response_rate_pages_through_the_loop(loop: Loop) -> None:
    """Invitations and answers over HTTP, back-dated: half of the baseline's invitations answered,
    one in twenty of the current window's (settled, ending 3 days ago); alerts fires response_rate
    for the segment, explained with the invitations it counted."""
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    waves = [("b", 15, 20), ("c", 5, 2)]  # (tag, days ago, answered of 40)
    invitations = [
        {"invitation_id": f"{run}-{tag}{n}", "respondent_id": f"{run}-{tag}{n}", "survey_id": "q4", "channel": "email",
         "invited_at": (now - timedelta(days=ago)).isoformat(), "attributes": {"run": run}}
        for tag, ago, _ in waves for n in range(40)
    ]  # fmt: skip
    answers = [
        {"respondent_id": f"{run}-{tag}{n}", "score": 9, "survey_id": "q4", "channel": "email",
         "invitation_id": f"{run}-{tag}{n}", "answered_at": (now - timedelta(days=ago) + timedelta(hours=2)).isoformat(),
         "attributes": {"run": run}}
        for tag, ago, answered in waves for n in range(answered)
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        sent = await client.post(
            f"{loop.urls['ingest']}/v1/invitations", json={"invitations": invitations}, headers=loop.auth
        )
        assert sent.status_code == 202 and sent.json()["recorded"] == 80, sent.text
        posted = await client.post(
            f"{loop.urls['ingest']}/v1/responses/batch", json={"responses": answers}, headers=loop.auth
        )
        assert posted.status_code == 200, posted.text

        async def fired() -> dict[str, Any] | None:
            reply = await client.get(
                f"{loop.urls['alerts']}/v1/alerts",
                params={"segment": f"run:{run}", "rule": "response_rate"},
                headers=loop.auth,
            )
            found: list[dict[str, Any]] = reply.json()["alerts"]
            return found[0] if found else None

        await eventually(lambda: _is_some(fired), timeout=30)
        alert = await fired()
    assert alert is not None
    x = alert["explanation"]
    assert (x["detail"]["current_invited"], x["detail"]["current_responded"]) == (40, 2)
    assert (x["detail"]["baseline_invited"], x["detail"]["baseline_responded"]) == (40, 20)
    assert x["drop_points"] == pytest.approx(45.0) and x["q_value"] < 0.05
    assert "Response rate of run:" in x["summary"] and "fell 45.0 points" in x["summary"]


async def _is_some(read: Callable[[], Awaitable[object | None]]) -> bool:
    return await read() is not None
