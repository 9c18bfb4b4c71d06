"""Publishable keys, tried as an attacker would: a page's key posts one response for a person its
server vouched for, from its own origins, to its own surveys, and nothing else; every other
operation, origin, survey, body or identity is refused with its own error and stores nothing; a
flood from one address or for one person is limited. Against `nps ingest` as a process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest_service.public import identity_hash
from shared.auth import KeyStore, Publishable, hash_api_key, identity_place, new_identity_secret, new_publishable_key
from shared.db import make_engine
from shared.events import response_events
from shared.sealed import Sealer
from tests.helpers import TEST_SECRETS_KEY, nps_here, read_topic
from tests.integration.conftest import LiveIngest, live_ingest

pytestmark = pytest.mark.integration

PAGE = "https://app.example.com"


@pytest.fixture(scope="module")
def public(pg_admin_url: str, bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIngest]:
    live = live_ingest(
        pg_admin_url,
        bootstrap,
        tmp_path_factory.mktemp("public"),
        NPS_INGEST_PUBLIC_RATE_PER_ADDRESS_S="2",
        NPS_INGEST_PUBLIC_BURST_PER_ADDRESS="60",
        NPS_INGEST_PUBLIC_RATE_PER_RESPONDENT_S="0.1",
        NPS_INGEST_PUBLIC_BURST_PER_RESPONDENT="3",
        # As behind a load balancer on this host: the client's address is X-Forwarded-For's.
        NPS_TRUSTED_PROXIES='["127.0.0.1"]',
    )
    yield live
    assert live.process.stop() == 0, live.process.log.read_text()[-3000:]


created_names: dict[str, str] = {}  # key -> its name


def make_key(ingest: LiveIngest, *args: str) -> tuple[str, str]:
    """A publishable key made as an operator makes one: `nps keys create --publishable` (a process)."""
    name = f"web-{uuid.uuid4().hex[:6]}"
    made = nps_here("keys", "create", name, "--publishable", *args, env=ingest.env)
    assert made.returncode == 0, made.stderr
    key, identity = made.stdout.split()
    assert key.startswith("nps_pk_") and identity.startswith("idsec_") and "only this once" in made.stderr
    created_names[key] = name
    return key, identity


async def quick_key(
    ingest: LiveIngest, *origins: str, native: bool = False, sample: float | None = None
) -> tuple[str, str]:
    """The same key written straight into the database (what the command does, without a process
    start of ~2 s on a busy machine): for the tests about using a key, not making one."""
    name, key, identity = f"web-{uuid.uuid4().hex[:6]}", new_publishable_key(), new_identity_secret()
    sealed = Sealer.of(TEST_SECRETS_KEY).seal(identity, identity_place(name))
    engine = make_engine(ingest.database_url)
    try:
        bound = Publishable(frozenset(origins), native=native, sample=sample)
        await KeyStore(engine).create(name, hash_api_key(key), (), "tests", bound, sealed)
    finally:
        await engine.dispose()
    created_names[key] = name
    return key, identity


def answer(identity: str, person: str, **fields: object) -> dict[str, object]:
    return {"respondent_id": person, "respondent_hash": identity_hash(identity, person), "score": 3, **fields}


async def known(client: httpx.AsyncClient, ingest: LiveIngest, key: str) -> None:
    """Ingest reloads its keys every 0.2 s here: wait until it knows this one."""
    for _ in range(100):
        reply = await client.post(f"{ingest.url}/v1/responses", headers={"Authorization": f"Bearer {key}"}, json={})
        if reply.status_code != 401:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the new key never became known")


async def test_a_page_posts_for_a_vouched_person_and_nothing_else(public: LiveIngest) -> None:
    key, identity = make_key(public, "--origin", PAGE, "--survey", "q4", "--channel", "web")
    auth = {"Authorization": f"Bearer {key}"}
    page = {**auth, "Origin": PAGE}
    person = f"p-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, public, key)
        url = f"{public.url}/v1/responses"
        rid = f"r-{uuid.uuid4().hex[:10]}"
        ok = await client.post(url, headers=page, json=answer(identity, person, response_id=rid, survey_id="q4"))
        assert ok.status_code == 202, ok.text
        assert ok.headers["access-control-allow-origin"] == PAGE and "Origin" in ok.headers["vary"]
        assert "access-control-allow-credentials" not in ok.headers
        assert "retry-after" in ok.headers["access-control-expose-headers"]

        refusals = [
            # (body, headers, status, code)
            ({**answer(identity, person), "respondent_hash": "0" * 64}, page, 401, "identity_unverified"),
            ({"respondent_id": person, "score": 3}, page, 401, "identity_unverified"),
            (answer(identity, "someone-else") | {"respondent_id": person}, page, 401, "identity_unverified"),
            (answer(identity, person), {**auth, "Origin": "https://evil.example"}, 403, "origin_not_allowed"),
            (
                answer(identity, person),
                {**auth, "Origin": "https://app.example.com.evil.example"},
                403,
                "origin_not_allowed",
            ),
            (answer(identity, person), auth, 403, "origin_required"),  # a script with no Origin
            (answer(identity, person, email="jane@example.com"), page, 422, "invalid_request"),
            (answer(identity, person, survey_id="other"), page, 403, "survey_not_allowed"),
            (answer(identity, person), page, 403, "survey_not_allowed"),  # no survey: not one of its surveys
            (answer(identity, person, survey_id="q4", channel="email"), page, 403, "channel_not_allowed"),
            (
                answer(identity, person, survey_id="q4", comment="x" * 7_000, attributes={"a": "b" * 1_500}),
                page,
                413,
                "body_too_large",
            ),
        ]
        for body, headers, status, code in refusals:
            reply = await client.post(url, headers=headers, json={**body, "response_id": f"bad-{uuid.uuid4().hex}"})
            assert (reply.status_code, reply.json()["code"]) == (status, code), (body, headers, reply.text)
            # A page of its own origin may read why; any other origin's may not.
            readable = headers.get("Origin") == PAGE
            assert ("access-control-allow-origin" in reply.headers) == readable, reply.headers

        # Every other operation, whatever the origin: 403, nothing done.
        others = [
            ("POST", "/v1/responses/batch", {"responses": [answer(identity, person, survey_id="q4")]}),
            ("POST", "/v1/responses/validate", answer(identity, person, survey_id="q4")),
            ("PUT", f"/v1/responses/{rid}", {"score": 10}),
            ("DELETE", f"/v1/respondents/{person}", None),
            ("GET", "/v1/audit", None),
        ]
        for method, path, body in others:
            reply = await client.request(method, f"{public.url}{path}", headers=page, json=body)
            assert (reply.status_code, reply.json()["code"]) == (403, "insufficient_scope"), (path, reply.text)

    records = await read_topic(public.bootstrap, public.topics.responses, expect=None, timeout=5, settle=1)
    mine = [response_events.validate_json(r.value) for r in records]  # type: ignore[arg-type]
    mine = [e for e in mine if getattr(e, "respondent_id", None) == person]
    assert [e.response_id for e in mine] == [rid]  # the one accepted; nothing refused was stored
    event = mine[0]
    assert event.channel == "web" and event.survey_id == "q4"  # the key's channel, set by the server
    assert event.source.startswith("web-")  # the key's name, not anything the client said
    assert "respondent_hash" not in records[-1].value.decode()  # type: ignore[union-attr]


async def test_a_browser_s_preflight_is_answered_for_listed_origins_only(public: LiveIngest) -> None:
    key, _ = await quick_key(public, "https://shop.example.org:8443")
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, public, key)
        asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        allowed = await client.options(
            f"{public.url}/v1/responses", headers={"Origin": "https://shop.example.org:8443", **asks}
        )
        assert allowed.status_code == 204, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example.org:8443"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"]
        assert int(allowed.headers["access-control-max-age"]) > 0 and "Origin" in allowed.headers["vary"]
        for origin in ("https://shop.example.org", "null", "https://evil.example"):
            refused = await client.options(f"{public.url}/v1/responses", headers={"Origin": origin, **asks})
            assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        # Not a public operation: no preflight answer at all.
        other = await client.options(
            f"{public.url}/v1/audit", headers={"Origin": "https://shop.example.org:8443", **asks}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_secret_keys_never_answer_cors_and_a_native_key_needs_no_origin(public: LiveIngest) -> None:
    native, identity = await quick_key(public, native=True)
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, public, native)
        person = f"n-{uuid.uuid4().hex[:8]}"
        app = await client.post(
            f"{public.url}/v1/responses", headers={"Authorization": f"Bearer {native}"}, json=answer(identity, person)
        )
        assert app.status_code == 202, app.text
        secret = await client.post(
            f"{public.url}/v1/responses",
            headers={**public.auth, "Origin": PAGE},
            json={"respondent_id": person, "score": 9},
        )
        assert secret.status_code == 202 and "access-control-allow-origin" not in secret.headers


async def test_a_flood_from_one_address_or_for_one_person_gets_429(public: LiveIngest) -> None:
    key, identity = await quick_key(public, PAGE)
    page = {"Authorization": f"Bearer {key}", "Origin": PAGE}
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, public, key)
        person = f"f-{uuid.uuid4().hex[:8]}"
        statuses = [
            (await client.post(f"{public.url}/v1/responses", headers=page, json=answer(identity, person))).status_code
            for _ in range(5)
        ]
        assert statuses[:3] == [202, 202, 202] and statuses[3] == 429  # one person's burst is 3

        async def from_address(address: str) -> httpx.Response:
            forwarded = {**page, "X-Forwarded-For": address}  # the trusted proxy names the client
            body = answer(identity, f"f-{uuid.uuid4().hex[:8]}")
            return await client.post(f"{public.url}/v1/responses", headers=forwarded, json=body)

        # Until the first 429 (the burst is 60, refilled at 2/s: a loaded host posts slower, not fewer).
        flood: list[httpx.Response] = []
        while len(flood) < 300 and not any(r.status_code == 429 for r in flood[-1:]):
            flood.append(await from_address("203.0.113.9"))
        limited = [r for r in flood if r.status_code == 429]
        assert limited and int(limited[0].headers["retry-after"]) >= 1  # one address's burst is 60
        assert limited[0].headers["access-control-allow-origin"] == PAGE  # the page may read when to retry
        # Every other client keeps its own allowance (a flood from one address stops only that one).
        assert (await from_address("203.0.113.10")).status_code == 202
        # And the flooding address is still held to its refill (2/s), not given a new burst of 60: a
        # token or two may have come back while the other client was answered on a loaded host.
        again: list[int] = []
        while len(again) < 10 and 429 not in again:
            again.append((await from_address("203.0.113.9")).status_code)
        assert 429 in again, again


def test_bad_publishable_keys_are_refused_at_creation(public: LiveIngest, tmp_path: Path) -> None:
    for args, says in (  # what an origin may look like: tests/unit/test_auth.py
        ([], "--origin"),
        (["--origin", "https://app.example.com/"], "not an origin"),
        (["--origin", PAGE, "--scope", "admin"], "no scopes"),
        (["--origin", PAGE, "--survey", "s" * 65], "survey id"),
    ):
        made = nps_here("keys", "create", f"bad-{uuid.uuid4().hex[:6]}", "--publishable", *args, env=public.env)
        assert made.returncode == 2 and says in made.stderr, (args, made.stderr)
    secret_with_origin = nps_here("keys", "create", f"bad-{uuid.uuid4().hex[:6]}", "--origin", PAGE, env=public.env)
    assert secret_with_origin.returncode == 2 and "need --publishable" in secret_with_origin.stderr


async def test_events_say_who_vouches_and_an_anonymous_key_takes_only_a_random_id(public: LiveIngest) -> None:
    verified_key, identity = await quick_key(public, PAGE)
    made = nps_here("keys", "create", f"anon-{uuid.uuid4().hex[:6]}", "--publishable", "--origin", PAGE, "--anonymous",
               env=public.env)  # fmt: skip
    assert made.returncode == 0 and len(made.stdout.split()) == 1, made.stdout  # no identity secret to keep
    anonymous_key = made.stdout.strip()
    url = f"{public.url}/v1/responses"
    random_id = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, public, verified_key)
        await known(client, public, anonymous_key)
        anonymous = {"Authorization": f"Bearer {anonymous_key}", "Origin": PAGE}
        for body, field in (
            ({"respondent_id": "user-1842", "score": 2}, "respondent_id"),  # a known person's id: refused
            ({"respondent_id": random_id.upper(), "score": 2}, "respondent_id"),
            ({"respondent_id": random_id, "score": 2, "respondent_hash": "a" * 64}, "respondent_hash"),
        ):
            refused = await client.post(url, headers=anonymous, json=body)
            assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field, refused.text
        ids = {}
        for who, headers, body in (
            ("anonymous", anonymous, {"respondent_id": random_id, "score": 2}),
            ("verified", {"Authorization": f"Bearer {verified_key}", "Origin": PAGE}, answer(identity, "p-v")),
            ("server", public.auth, {"respondent_id": "p-s", "score": 2}),
        ):
            reply = await client.post(url, headers=headers, json={**body, "response_id": f"id-{uuid.uuid4().hex}"})
            assert reply.status_code == 202, reply.text
            ids[reply.json()["response_id"]] = who
    records = await read_topic(public.bootstrap, public.topics.responses, expect=None, timeout=5, settle=1)
    events = [response_events.validate_json(r.value) for r in records]  # type: ignore[arg-type]
    seen = {e.response_id: e.identity for e in events if e.response_id in ids}  # type: ignore[union-attr]
    assert seen == ids


async def test_an_identity_secret_rotates_with_an_overlap(public: LiveIngest) -> None:
    key, old = await quick_key(public, PAGE)
    page = {"Authorization": f"Bearer {key}", "Origin": PAGE}
    url = f"{public.url}/v1/responses"

    async def status(secret: str) -> int:
        return (await client.post(url, headers=page, json=answer(secret, f"r-{uuid.uuid4().hex[:8]}"))).status_code

    async def until(secret: str, want: int) -> None:
        for _ in range(100):
            if await status(secret) == want:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"never {want}")

    key_name = created_names[key]
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, public, key)
        assert await status(old) == 202
        overlapping = nps_here("keys", "rotate-identity", key_name, "--overlap-s", "600", env=public.env)
        assert overlapping.returncode == 0, overlapping.stderr
        new = overlapping.stdout.strip()
        await until(new, 202)
        assert await status(old) == 202  # the servers still on the old one keep working meanwhile
        ended = nps_here("keys", "rotate-identity", key_name, "--overlap-s", "0", env=public.env)
        assert ended.returncode == 0, ended.stderr
        newest = ended.stdout.strip()
        await until(newest, 202)
        assert await status(new) == 401 and await status(old) == 401
    missing = nps_here("keys", "rotate-identity", "no-such-key", env=public.env)
    assert missing.returncode == 1 and "no active publishable key" in missing.stderr
