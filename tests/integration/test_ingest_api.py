"""Ingest's HTTP contract, against `nps ingest` on the real broker and database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.db import make_engine
from shared.events import RespondentErased, ResponseRevised, ResponseSubmitted, response_events
from tests.helpers import INVALID_BASICS, eventually, nps_here, read_topic
from tests.integration.conftest import LiveIngest

pytestmark = pytest.mark.integration


def rid() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


async def events_for(
    ingest: LiveIngest, response_id: str | None = None, respondent_id: str | None = None, expect: int = 1
) -> list[Any]:
    records = await read_topic(ingest.bootstrap, ingest.topics.responses, expect=None, timeout=3)
    found = []
    for record in records:
        event = response_events.validate_json(record.value)
        if response_id is not None and getattr(event, "response_id", None) != response_id:
            continue
        if respondent_id is not None and event.respondent_id != respondent_id:
            continue
        assert record.key == event.respondent_id.encode()  # one respondent, one partition
        found.append(event)
    return found


async def post(ingest: LiveIngest, body: Any, path: str = "/v1/responses", **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{ingest.url}{path}", json=body, headers=kw.pop("headers", ingest.auth), **kw)


INVALID = [
    *INVALID_BASICS,
    ({"respondent_id": "x" * 129, "score": 7}, "respondent_id"),
    ({"respondent_id": "u", "score": 7, "comment": "c" * 5001}, "comment"),
    ({"respondent_id": "u", "score": 7, "channel": "c" * 65}, "channel"),
    ({"respondent_id": "u", "score": 7, "answered_at": "2999-01-01T00:00:00Z"}, "answered_at"),
    ({"respondent_id": "u", "score": 7, "answered_at": "2001-01-01T00:00:00Z"}, "answered_at"),
    ({"respondent_id": "u", "score": 7, "answered_at": "2026-11-24T10:00:00"}, "answered_at"),
    ({"respondent_id": "u", "score": 7, "answered_at": "soon"}, "answered_at"),
    ({"respondent_id": "u", "score": 7, "attributes": {"Plan": "pro"}}, "attributes.Plan"),
    ({"respondent_id": "u", "score": 7, "attributes": {"plan": 3}}, "attributes.plan"),
    ({"respondent_id": "u", "score": 7, "attributes": {"channel": "web"}}, "attributes.channel"),
    ({"respondent_id": "u", "score": 7, "attributes": {f"k{i}": "v" for i in range(33)}}, "attributes"),
    ({"respondent_id": "u", "score": 7, "email": "e" * 255}, "email"),
    ({"respondent_id": "u", "score": 7, "nps": 7}, "nps"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
async def test_invalid_input_gets_422_naming_the_field(ingest: LiveIngest, body: dict[str, Any], field: str) -> None:
    reply = await post(ingest, body)
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert set(problem) == {"code", "message", "errors"} and problem["code"] == "invalid_request"
    assert field in [e["field"] for e in problem["errors"]], problem


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b"null", b""])
async def test_bodies_that_are_not_an_object_get_422(ingest: LiveIngest, raw: bytes) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(
            f"{ingest.url}/v1/responses", content=raw, headers={**ingest.auth, "content-type": "application/json"}
        )
    assert reply.status_code == 422 and reply.json()["code"] == "invalid_request"


async def test_missing_and_wrong_keys_get_401(ingest: LiveIngest) -> None:
    body = {"respondent_id": "u", "score": 7}
    missing = await post(ingest, body, headers={})
    assert missing.status_code == 401 and missing.json()["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await post(ingest, body, headers={"Authorization": "Bearer nps_not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"
    basic = await post(ingest, body, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


async def test_a_new_key_works_and_a_revoked_key_stops_working(ingest: LiveIngest) -> None:
    created = nps_here("keys", "create", "short-lived", env=ingest.env)
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    listed = nps_here("keys", "list", env=ingest.env).stdout
    assert "short-lived" in listed and created.stdout.strip() not in listed  # names only, never keys

    async def accepted() -> bool:
        return (await post(ingest, {"respondent_id": "u", "score": 9}, headers=headers)).status_code == 202

    await eventually(accepted, timeout=5)
    assert nps_here("keys", "revoke", "short-lived", env=ingest.env).returncode == 0

    async def refused() -> bool:
        return (await post(ingest, {"respondent_id": "u", "score": 9}, headers=headers)).status_code == 401

    await eventually(refused, timeout=5)
    assert nps_here("keys", "revoke", "short-lived", env=ingest.env).returncode == 1  # already revoked


async def test_oversized_bodies_get_413(ingest: LiveIngest) -> None:
    big = {"respondent_id": "u", "score": 7, "comment": "x" * (65 * 1024)}
    reply = await post(ingest, big)
    assert reply.status_code == 413 and reply.json()["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"respondent_id": "u", "score": 7, "comment": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}'

    async with httpx.AsyncClient(timeout=10) as client:  # no Content-Length: counted while streaming
        streamed = await client.post(
            f"{ingest.url}/v1/responses", content=chunks(), headers={**ingest.auth, "content-type": "application/json"}
        )
    assert streamed.status_code == 413

    item = {"respondent_id": "u", "score": 7, "comment": "z" * 4000}
    batch = await post(ingest, {"responses": [item] * 600}, path="/v1/responses/batch")  # ~2.4 MB
    assert batch.status_code == 413


async def test_a_retry_is_accepted_again_and_a_different_body_conflicts(ingest: LiveIngest) -> None:
    body = {"response_id": rid(), "respondent_id": "u-retry", "score": 4, "comment": "slow"}
    first, again = await post(ingest, body), await post(ingest, body)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json() == again.json() == {"response_id": body["response_id"]}
    other = await post(ingest, {**body, "score": 10})
    assert other.status_code == 409 and other.json()["code"] == "response_id_conflict"
    events = await events_for(ingest, body["response_id"], expect=2)
    assert [type(e) for e in events] == [ResponseSubmitted, ResponseSubmitted]  # the retry, never the conflict
    assert {e.score for e in events} == {4}
    assert {e.source for e in events} == {"app-tests"}  # which API key sent it


async def test_a_generated_response_id_is_returned(ingest: LiveIngest) -> None:
    reply = await post(ingest, {"respondent_id": "u-gen", "score": 8})
    assert reply.status_code == 202
    generated = reply.json()["response_id"]
    assert uuid.UUID(generated)
    assert len(await events_for(ingest, generated)) == 1


async def test_batch_accepts_the_valid_items_and_explains_the_others(ingest: LiveIngest) -> None:
    taken = {"response_id": rid(), "respondent_id": "u-b", "score": 1}
    assert (await post(ingest, taken)).status_code == 202
    ok = {"response_id": rid(), "respondent_id": "u-b1", "score": 10, "channel": "sms"}
    items = [
        ok,
        {"respondent_id": "u-b2", "score": 6.5},
        {**taken, "score": 2},  # same id, different body
        {"respondent_id": "u-b3", "score": 7, "attributes": {"survey_id": "x"}},
        ok,  # a repeat inside the batch is a retry
        {"respondent_id": "u-b4", "score": 0, "answered_at": (datetime.now(UTC) - timedelta(days=400)).isoformat()},
    ]
    reply = await post(ingest, {"responses": items}, path="/v1/responses/batch")
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert [r["status"] for r in result["results"]] == [
        "accepted",
        "rejected",
        "conflict",
        "rejected",
        "accepted",
        "accepted",
    ]
    assert (result["accepted"], result["rejected"], result["conflict"], result["unavailable"]) == (3, 2, 1, 0)
    assert result["results"][1]["errors"][0]["field"] == "score"
    assert result["results"][3]["errors"][0]["field"] == "attributes.survey_id"
    backfilled = result["results"][5]["response_id"]
    events = await events_for(ingest, backfilled)
    assert len(events) == 1 and events[0].answered_at < datetime.now(UTC) - timedelta(days=399)
    assert len(await events_for(ingest, ok["response_id"], expect=2)) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"responses": []},
        {"responses": [{"respondent_id": "u", "score": 1}] * 1001},
        {"items": []},
        {"responses": "all"},
    ],
)
async def test_batch_envelope_is_validated(ingest: LiveIngest, body: dict[str, Any]) -> None:
    reply = await post(ingest, body, path="/v1/responses/batch")
    assert reply.status_code == 422, reply.text


async def test_revisions_get_increasing_versions_on_the_respondents_partition(ingest: LiveIngest) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        missing = await client.put(f"{ingest.url}/v1/responses/{rid()}", json={"score": 5}, headers=ingest.auth)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        original = {
            "response_id": rid(),
            "respondent_id": "u-rev",
            "score": 3,
            "channel": "web",
            "answered_at": "2026-11-01T10:00:00Z",
            "attributes": {"plan": "free"},
        }
        assert (await post(ingest, original)).status_code == 202
        url = f"{ingest.url}/v1/responses/{original['response_id']}"
        first = await client.put(
            url, json={"score": 9, "comment": "fixed", "attributes": {"plan": "pro"}}, headers=ingest.auth
        )
        second = await client.put(url, json={"score": 10}, headers=ingest.auth)
        assert (first.status_code, second.status_code) == (202, 202)
        assert (first.json()["version"], second.json()["version"]) == (2, 3)
        bad = await client.put(url, json={"score": 9, "respondent_id": "someone-else"}, headers=ingest.auth)
        assert bad.status_code == 422
    events = await events_for(ingest, original["response_id"], expect=3)
    revised = [e for e in events if isinstance(e, ResponseRevised)]
    assert [(e.version, e.score, e.comment, e.attributes) for e in revised] == [
        (2, 9, "fixed", {"plan": "pro"}),
        (3, 10, None, {}),
    ]
    for e in revised:  # what the revision does not change comes from the original
        assert (e.respondent_id, e.channel, e.answered_at) == ("u-rev", "web", datetime(2026, 11, 1, 10, tzinfo=UTC))


async def test_erasure_is_published_and_the_respondent_is_forgotten(ingest: LiveIngest) -> None:
    person = f"u-erase-{uuid.uuid4().hex[:6]}"
    body = {"response_id": rid(), "respondent_id": person, "score": 2, "email": "jane@example.com"}
    assert (await post(ingest, body)).status_code == 202
    async with httpx.AsyncClient(timeout=10) as client:
        erased = await client.delete(f"{ingest.url}/v1/respondents/{person}", headers=ingest.auth)
        assert erased.status_code == 202
        assert erased.json()["respondent_id"] == person
        after = await client.put(
            f"{ingest.url}/v1/responses/{body['response_id']}", json={"score": 9}, headers=ingest.auth
        )
        assert after.status_code == 404  # ingest no longer knows the response
        unauthenticated = await client.delete(f"{ingest.url}/v1/respondents/{person}")
        assert unauthenticated.status_code == 401
    events = await events_for(ingest, respondent_id=person, expect=2)
    assert [type(e) for e in events] == [ResponseSubmitted, RespondentErased]
    assert events[1].erasure_id == erased.json()["erasure_id"]


async def test_validate_checks_without_publishing(ingest: LiveIngest) -> None:
    body = {"response_id": rid(), "respondent_id": "u-dry", "score": 6}
    reply = await post(ingest, body, path="/v1/responses/validate")
    assert reply.status_code == 200 and reply.json() == {"valid": True}
    future = await post(ingest, {**body, "answered_at": "2999-01-01T00:00:00Z"}, path="/v1/responses/validate")
    assert future.status_code == 422
    assert await events_for(ingest, body["response_id"]) == []
    assert (await post(ingest, body)).status_code == 202  # the id was not used up by the dry run


async def test_openapi_documents_every_operation_with_examples_and_auth(ingest: LiveIngest) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        spec = (await client.get(f"{ingest.url}/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    operations = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    for key in [("/v1/responses", "post"), ("/v1/responses/batch", "post"), ("/v1/responses/validate", "post")]:
        content = operations[key]["requestBody"]["content"]["application/json"]
        assert content.get("examples"), key
    put_schema = operations[("/v1/responses/{response_id}", "put")]["requestBody"]["content"]["application/json"]
    assert put_schema["schema"]
    for (path, _), op in operations.items():
        if path.startswith("/v1/"):
            assert {"401", "422", "429"} <= set(op["responses"]), path
            if not path.endswith("/validate"):  # the dry run never waits on the broker or database
                assert "503" in op["responses"], path


async def test_a_key_without_the_scope_gets_403(ingest: LiveIngest) -> None:
    reader = nps_here("keys", "create", f"reader-{rid()}", "--scope", "scores:read", env=ingest.env)
    writer = nps_here("keys", "create", f"writer-{rid()}", "--scope", "responses:write", env=ingest.env)
    assert reader.returncode == 0 and writer.returncode == 0, reader.stderr + writer.stderr
    as_reader = {"Authorization": f"Bearer {reader.stdout.strip()}"}
    as_writer = {"Authorization": f"Bearer {writer.stdout.strip()}"}

    async def writer_known() -> bool:
        # Keys take effect at the gate's next reload. The writer was created after the reader, so
        # once the writer is known both are (a reload between the two creations knows only the
        # reader: waiting on the reader alone made this test flaky).
        return (await post(ingest, {"respondent_id": "u", "score": 9}, headers=as_writer)).status_code == 202

    await eventually(writer_known, timeout=5)
    reply = await post(ingest, {"respondent_id": "u", "score": 9}, headers=as_reader)
    assert reply.status_code == 403 and reply.json()["code"] == "insufficient_scope", reply.text
    async with httpx.AsyncClient(timeout=10) as client:  # erasure is a scope of its own
        erase = await client.delete(f"{ingest.url}/v1/respondents/u", headers=as_writer)
        assert erase.status_code == 403 and erase.json()["code"] == "insufficient_scope", erase.text
        assert (await client.delete(f"{ingest.url}/v1/respondents/u", headers=ingest.auth)).status_code == 202
    listed = nps_here("keys", "list", env=ingest.env).stdout
    assert "\tscores:read\t" in listed and "\tresponses:write\t" in listed


def test_keys_with_an_unknown_scope_are_refused(ingest: LiveIngest) -> None:
    made = nps_here("keys", "create", f"bad-{rid()}", "--scope", "scores:write", env=ingest.env)
    assert made.returncode == 2 and "unknown scope scores:write" in made.stderr


async def test_two_authorization_headers_are_refused_on_raw_and_framework_routes(ingest: LiveIngest) -> None:
    key = ingest.auth["Authorization"]
    twice = [("Authorization", key), ("Authorization", "Bearer nps_someone-else")]
    async with httpx.AsyncClient(timeout=10) as client:
        replies = [
            await client.post(f"{ingest.url}/v1/responses", json={"respondent_id": "u", "score": 9}, headers=twice),
            await client.put(f"{ingest.url}/v1/responses/{rid()}", json={"score": 9}, headers=twice),
            await client.delete(f"{ingest.url}/v1/respondents/u", headers=list(reversed(twice))),
        ]
    for reply in replies:
        assert reply.status_code == 401, reply.text
        assert reply.json()["code"] == "duplicate_authorization"


async def test_the_audit_log_records_keys_and_erasures_for_admins_only(ingest: LiveIngest) -> None:
    auditor = nps_here("keys", "create", f"auditor-{rid()}", "--scope", "admin", env=ingest.env)
    assert auditor.returncode == 0, auditor.stderr
    as_admin = {"Authorization": f"Bearer {auditor.stdout.strip()}"}
    person = f"erased-{rid()}"
    async with httpx.AsyncClient(timeout=10) as client:
        erased = await client.delete(f"{ingest.url}/v1/respondents/{person}", headers=ingest.auth)
        assert erased.status_code == 202, erased.text

        async def listed() -> dict[str, Any]:
            reply = await client.get(f"{ingest.url}/v1/audit", params={"limit": 1000}, headers=as_admin)
            return reply.json() if reply.status_code == 200 else {}

        await eventually(lambda: _truthy(listed()), timeout=6)  # the admin key reaches ingest's cache
        entries = (await listed())["entries"]
        refused = await client.get(f"{ingest.url}/v1/audit", headers=ingest.auth)
        only_keys = await client.get(f"{ingest.url}/v1/audit", params={"action": "key.created"}, headers=as_admin)
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
    erasure = next(e for e in entries if e["subject"] == erased.json()["erasure_id"])
    assert erasure["action"] == "respondent.erasure_requested" and erasure["actor"] == "app-tests"
    assert person not in json.dumps(entries)  # an erasure is recorded by its id, never by whom it erased
    created = [e for e in entries if e["action"] == "key.created" and e["subject"].startswith("auditor-")]
    assert created and created[0]["actor"].startswith("cli:") and created[0]["detail"] == {"scopes": ["admin"]}
    assert {e["action"] for e in only_keys.json()["entries"]} == {"key.created"}
    cli = nps_here("audit", "--action", "respondent.erasure_requested", env=ingest.env)
    assert cli.returncode == 0 and erased.json()["erasure_id"] in cli.stdout


async def _truthy(answer: Awaitable[dict[str, Any]]) -> bool:
    return bool(await answer)


async def test_the_audit_log_is_append_only(ingest: LiveIngest) -> None:
    engine = make_engine(ingest.database_url)
    try:
        for statement in (
            "UPDATE auth.audit_log SET actor = 'x'",
            "DELETE FROM auth.audit_log",
            "TRUNCATE auth.audit_log",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.text("INSERT INTO auth.audit_log (actor, action, subject) VALUES ('t', 't', 't')")
                    )
                    await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def test_the_request_id_is_answered_and_sent_on_as_a_kafka_header_single_and_batch(ingest: LiveIngest) -> None:
    single, batched = rid(), [rid(), rid()]
    traced = {**ingest.auth, "X-Request-Id": f"trace-{single}"}
    assert (await post(ingest, {"response_id": single, "respondent_id": "u", "score": 9}, headers=traced)).headers[
        "x-request-id"
    ] == f"trace-{single}"
    items = [{"response_id": r, "respondent_id": "u", "score": 3} for r in batched]
    answer = await post(ingest, {"responses": items}, path="/v1/responses/batch")  # no id sent: one is made
    assert answer.status_code == 200, answer.text
    made = answer.headers["x-request-id"]
    assert len(made) == 24

    records = await read_topic(ingest.bootstrap, ingest.topics.responses, expect=None, timeout=3)
    carried = {}
    for record in records:
        response_id = json.loads(record.value).get("response_id")
        if response_id in (single, *batched):
            carried[response_id] = dict(record.headers).get("x-request-id")
    assert carried == {single: f"trace-{single}".encode(), batched[0]: made.encode(), batched[1]: made.encode()}


async def test_concurrent_posts_are_grouped_yet_each_record_carries_its_own_request_id(ingest: LiveIngest) -> None:
    ids = [rid() for _ in range(30)]
    async with httpx.AsyncClient(timeout=10) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{ingest.url}/v1/responses",
                    json={"response_id": r, "respondent_id": f"u-{r}", "score": 6},
                    headers={**ingest.auth, "X-Request-Id": f"trace-{r}"},
                )
                for r in ids
            ),
            # One id, two bodies, at once: exactly one is accepted.
            *(
                client.post(
                    f"{ingest.url}/v1/responses",
                    json={"response_id": ids[0] + "-twice", "respondent_id": "u-twice", "score": s},
                    headers=ingest.auth,
                )
                for s in (0, 10)
            ),
        )
    assert [a.status_code for a in answers[:30]] == [202] * 30
    assert sorted(a.status_code for a in answers[30:]) == [202, 409]
    records = await read_topic(ingest.bootstrap, ingest.topics.responses, expect=None, timeout=3)
    carried = {}
    for record in records:
        response_id = json.loads(record.value).get("response_id")
        if response_id in ids or response_id == ids[0] + "-twice":
            carried.setdefault(response_id, []).append(dict(record.headers).get("x-request-id"))
    assert {r: carried.get(r) for r in ids} == {r: [f"trace-{r}".encode()] for r in ids}
    assert len(carried[ids[0] + "-twice"]) == 1
