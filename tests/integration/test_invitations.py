"""Who was asked, as ingest takes it: invitations from an app's server, prompts shown and dismissed
from a page, each idempotent on its id, refused with its own error when bad (nothing stored, nothing
published), on nps.invitations.v1, and forgotten with the person. Against `nps ingest` as a process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ingest_service.public import identity_hash
from shared.db import make_engine
from shared.events import ContactChanged, InvitationSent, RespondentErased, invitation_events, response_events
from shared.kafka import ensure_topics
from shared.settings import Topics
from tests.helpers import eventually, keyed, nps_here, produce, read_topic, started_producer
from tests.integration.conftest import LiveIngest, live_ingest
from tests.integration.test_publishable_keys import known, quick_key

pytestmark = pytest.mark.integration

PAGE = "https://app.example.com"


@pytest.fixture(scope="module")
def asking(pg_admin_url: str, bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIngest]:
    live = live_ingest(
        pg_admin_url, bootstrap, tmp_path_factory.mktemp("asking"), NPS_INGEST_RATE_LIMIT_PER_S="0",
        NPS_INGEST_PUBLIC_RATE_PER_ADDRESS_S="0",  # the tests of the address limit are test_publishable_keys.py
    )  # fmt: skip
    yield live
    assert live.process.stop() == 0, live.process.log.read_text()[-3000:]


_made: dict[str, dict[str, str]] = {}


def inviter(ingest: LiveIngest, scopes: str = "invitations:write") -> dict[str, str]:
    """A key with these scopes (one per module's ingest), once ingest knows it (it reloads keys
    every 0.2 s here)."""
    if scopes not in _made:
        made = nps_here("keys", "create", f"mailer-{uuid.uuid4().hex[:6]}", "--scope", scopes, env=ingest.env)
        assert made.returncode == 0, made.stderr
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        for _ in range(100):
            if httpx.post(f"{ingest.url}/v1/invitations", headers=headers, json={}).status_code != 401:
                break
            time.sleep(0.1)
        _made[scopes] = headers
    return _made[scopes]


def invitation(person: str, **fields: Any) -> dict[str, Any]:
    return {
        "invitation_id": f"inv-{uuid.uuid4().hex[:10]}",
        "respondent_id": person,
        "survey_id": "q4",
        "channel": "email",
        "invited_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "attributes": {"plan": "pro"},
        **fields,
    }


async def stored(ingest: LiveIngest, person: str) -> list[tuple[str, str]]:
    engine = make_engine(ingest.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT invitation_id, how FROM ingest.invitations WHERE respondent_id = :p ORDER BY 1"),
                {"p": person},
            )
            logged = await conn.scalar(
                sa.text("SELECT count(*) FROM ingest.events WHERE kind = 'invitation' AND respondent_id = :p"),
                {"p": person},
            )
            return [(r.invitation_id, r.how) for r in rows] + [("logged", str(logged))]
    finally:
        await engine.dispose()


async def on_topic(ingest: LiveIngest, person: str, expect: int) -> list[Any]:
    records = await read_topic(ingest.bootstrap, ingest.topics.invitations, expect=None, timeout=4, settle=0.5)
    events = [invitation_events.validate_json(r.value) for r in records]  # type: ignore[arg-type]
    mine = [e for e in events if e.respondent_id == person]
    assert len(mine) >= expect, mine
    return mine


async def test_invitations_are_recorded_once_each_and_published(asking: LiveIngest) -> None:
    url, headers, person = f"{asking.url}/v1/invitations", inviter(asking), f"p-{uuid.uuid4().hex[:8]}"
    first, second = invitation(person), invitation(person, channel="sms")
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.post(url, headers=asking.auth, json={"invitations": [first]})  # responses:write only
        assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope", refused.text

        reply = await client.post(url, headers=headers, json={"invitations": [first, second]})
        assert reply.status_code == 202, reply.text
        assert reply.json() == {"recorded": 2, "repeated": 0, "conflicts": []}
        again = await client.post(url, headers=headers, json={"invitations": [first]})  # a retry
        assert again.json() == {"recorded": 0, "repeated": 1, "conflicts": []}
        reused = await client.post(url, headers=headers, json={"invitations": [{**second, "survey_id": "other"}]})
        assert reused.json() == {"recorded": 0, "repeated": 0, "conflicts": [second["invitation_id"]]}
    both = sorted([(first["invitation_id"], "invited"), (second["invitation_id"], "invited")])
    assert await stored(asking, person) == [*both, ("logged", "2")]
    events = await on_topic(asking, person, 2)
    assert {e.invitation_id for e in events} == {first["invitation_id"], second["invitation_id"]}  # no conflict's
    assert all(isinstance(e, InvitationSent) and e.how == "invited" and e.attributes == {"plan": "pro"} for e in events)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"invited_at": "2099-01-01T00:00:00Z"}, "invitations.0.invited_at"),
        ({"invited_at": "2001-01-01T00:00:00Z"}, "invitations.0.invited_at"),
        ({"invited_at": "2026-12-01T09:00:00"}, "invitations.0.invited_at"),  # no zone
        ({"attributes": {"channel": "x"}}, "invitations.0.attributes.channel"),
        ({"respondent_id": ""}, "invitations.0.respondent_id"),
        ({"invitation_id": "a\x00b"}, "invitations.0.invitation_id"),
        ({"score": 3}, "invitations.0.score"),
    ],
)
async def test_a_bad_invitation_is_refused_and_nothing_is_stored(
    asking: LiveIngest, change: dict[str, Any], field: str
) -> None:
    person = f"bad-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        good, bad = invitation(person), invitation(person, **change)
        reply = await client.post(
            f"{asking.url}/v1/invitations", headers=inviter(asking), json={"invitations": [bad, good]}
        )
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["field"] == field, reply.text
    assert await stored(asking, person) == [("logged", "0")]  # not even the good one


async def test_too_many_or_one_id_twice_is_refused(asking: LiveIngest) -> None:
    headers, person = inviter(asking), f"many-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        many = await client.post(
            f"{asking.url}/v1/invitations", headers=headers, json={"invitations": [invitation(person)] * 1001}
        )
        assert many.status_code in (413, 422), many.text
        one = invitation(person)
        twice = await client.post(
            f"{asking.url}/v1/invitations", headers=headers, json={"invitations": [one, {**one, "channel": "sms"}]}
        )
        assert twice.status_code == 422 and "given twice" in twice.text, twice.text
    assert await stored(asking, person) == [("logged", "0")]


async def test_a_page_records_its_prompt_shown_then_dismissed_as_one_invitation(asking: LiveIngest) -> None:
    key, identity = await quick_key(asking, PAGE)
    page = {"Authorization": f"Bearer {key}", "Origin": PAGE}
    person, impression = f"w-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    body = {"impression_id": impression, "respondent_id": person, "respondent_hash": identity_hash(identity, person),
            "survey_id": "q4", "attributes": {"plan": "pro"}}  # fmt: skip
    url = f"{asking.url}/v1/impressions"
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, asking, key)
        preflight = await client.options(url, headers={"Origin": PAGE, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == PAGE
        for action, status in (("shown", "recorded"), ("shown", "repeated"), ("dismissed", "recorded"),
                               ("dismissed", "repeated"), ("shown", "repeated")):  # fmt: skip
            reply = await client.post(url, headers=page, json={**body, "action": action})
            assert reply.status_code == 202, reply.text
            assert reply.json() == {"invitation_id": impression, "status": status}, (action, reply.text)
            assert reply.headers["access-control-allow-origin"] == PAGE

        # What an attacker with the page's key tries: each refused, nothing stored.
        stranger = f"s-{uuid.uuid4().hex[:8]}"
        refusals = (
            (page, {**body, "impression_id": str(uuid.uuid4()), "respondent_id": stranger}, 401, "identity_unverified"),
            (page, {**body, "impression_id": str(uuid.uuid4()), "respondent_id": stranger,
                    "respondent_hash": None}, 401, "identity_unverified"),
            ({**page, "Origin": "https://evil.example"}, {**body, "action": "shown"}, 403, "origin_not_allowed"),
            ({"Authorization": page["Authorization"]}, {**body, "action": "shown"}, 403, "origin_required"),
            (page, {**body, "respondent_id": stranger, "respondent_hash": identity_hash(identity, stranger)}, 409,
             "impression_id_conflict"),  # another person under the same impression_id
            (page, {**body, "impression_id": str(uuid.uuid4()), "action": "clicked"}, 422, "invalid_request"),
        )  # fmt: skip
        for headers, sent, status, code in refusals:
            sent = {"action": "shown", **sent}
            reply = await client.post(url, headers=headers, json=sent)
            assert reply.status_code == status and reply.json()["code"] == code, (sent, reply.text)
        # The page's key records impressions and nothing else of the kind.
        batch = await client.post(f"{asking.url}/v1/invitations", headers=page, json={"invitations": []})
        assert batch.status_code == 403 and batch.json()["code"] == "insufficient_scope", batch.text
    assert await stored(asking, person) == [(impression, "dismissed"), ("logged", "2")]
    assert await stored(asking, stranger) == [("logged", "0")]
    events = await on_topic(asking, person, 2)
    published = [(e.invitation_id, e.how) for e in events]  # a retry is published again, a late `shown` not
    assert published == [(impression, "shown")] * 2 + [(impression, "dismissed")] * 2


async def test_erasure_forgets_the_person_s_invitations_and_reaches_their_topic(asking: LiveIngest) -> None:
    headers, person = inviter(asking, "invitations:write,respondents:erase"), f"e-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(
            f"{asking.url}/v1/invitations", headers=headers, json={"invitations": [invitation(person)]}
        )
        assert reply.status_code == 202, reply.text
        assert (await client.delete(f"{asking.url}/v1/respondents/{person}", headers=headers)).status_code == 202
    assert await stored(asking, person) == [("logged", "0")]
    events = await on_topic(asking, person, 2)
    assert isinstance(events[-1], RespondentErased)


async def test_a_replay_brings_invitations_back_to_their_own_topic(asking: LiveIngest, bootstrap: str) -> None:
    """What a broker lost, published again (`nps ingest replay`): invitations to nps.invitations.v1,
    an erasure to both topics, never an invitation to the responses topic."""
    headers, started = inviter(asking, "invitations:write,respondents:erase"), datetime.now(UTC)
    kept, erased = f"k-{uuid.uuid4().hex[:8]}", f"x-{uuid.uuid4().hex[:8]}"
    sent = [invitation(kept), invitation(erased)]
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(f"{asking.url}/v1/invitations", headers=headers, json={"invitations": sent})
        assert reply.status_code == 202, reply.text
        assert (await client.delete(f"{asking.url}/v1/respondents/{erased}", headers=headers)).status_code == 202

    lost = Topics(f"t{uuid.uuid4().hex[:10]}")
    await ensure_topics(bootstrap, lost.all(), 3)
    replayed = nps_here(
        "ingest", "replay", "--since", started.isoformat(), env={**asking.env, "NPS_TOPIC_NAMESPACE": lost.namespace}
    )
    assert replayed.returncode == 0, replayed.stderr
    invitations = [
        invitation_events.validate_json(r.value) for r in await read_topic(bootstrap, lost.invitations, expect=2)
    ]
    responses = [response_events.validate_json(r.value) for r in await read_topic(bootstrap, lost.responses, expect=1)]
    # Two people, two partitions: read in either order.
    assert sorted((type(e).__name__, e.respondent_id) for e in invitations) == [
        ("InvitationSent", kept),
        ("RespondentErased", erased),
    ]
    assert [(type(e).__name__, e.respondent_id) for e in responses] == [("RespondentErased", erased)]


# --- GET /v1/prompt ---


async def prompt(client: httpx.AsyncClient, ingest: LiveIngest, headers: dict[str, str], **params: str) -> Any:
    reply = await client.get(f"{ingest.url}/v1/prompt", headers=headers, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_the_prompt_says_no_after_an_answer_an_invitation_an_erasure_or_an_opt_out(asking: LiveIngest) -> None:
    reader = inviter(asking, "contact:read,invitations:write,responses:write,respondents:erase")
    fresh, answered, invited, erased, opted = (f"{w}-{uuid.uuid4().hex[:8]}" for w in ("f", "a", "i", "e", "o"))
    async with httpx.AsyncClient(timeout=10) as client:
        assert await prompt(client, asking, reader, respondent_id=fresh) == {
            "show": True,
            "reason": None,
            "next_at": None,
        }
        posted = await client.post(
            f"{asking.url}/v1/responses", headers=reader, json={"respondent_id": answered, "score": 9}
        )
        assert posted.status_code == 202, posted.text
        said = await prompt(client, asking, reader, respondent_id=answered, survey_id="q4")
        assert said["show"] is False and said["reason"] == "surveyed_recently"
        assert datetime.fromisoformat(said["next_at"]) > datetime.now(UTC) + timedelta(days=89)  # 90 days on
        sent = await client.post(
            f"{asking.url}/v1/invitations", headers=reader, json={"invitations": [invitation(invited)]}
        )
        assert sent.status_code == 202, sent.text
        said = await prompt(client, asking, reader, respondent_id=invited)
        assert said["reason"] == "asked_recently" and datetime.fromisoformat(said["next_at"]) < datetime.now(
            UTC
        ) + timedelta(days=7)
        assert (await client.delete(f"{asking.url}/v1/respondents/{erased}", headers=reader)).status_code == 202
        assert await prompt(client, asking, reader, respondent_id=erased) == {
            "show": False,
            "reason": "erased",
            "next_at": None,
        }

        # Follow-up's opt-outs arrive on nps.contact.v1; the latest change per person wins, whatever the order.
        now = datetime.now(UTC)
        changes = [
            ContactChanged(respondent_id=opted, opted_out=True, changed_at=now - timedelta(minutes=2)),
            ContactChanged(respondent_id=opted, opted_out=False, changed_at=now - timedelta(minutes=1)),
            ContactChanged(respondent_id=opted, opted_out=True, changed_at=now - timedelta(minutes=3)),  # late, older
            ContactChanged(respondent_id=fresh, opted_out=True, changed_at=now),
        ]
        async with started_producer(asking.bootstrap) as producer:
            await produce(producer, asking.topics.contact, keyed(changes))

        async def mirrored() -> bool:
            return bool((await prompt(client, asking, reader, respondent_id=fresh))["reason"] == "opted_out")

        await eventually(mirrored, timeout=30)
        assert (await prompt(client, asking, reader, respondent_id=opted))["show"] is True  # opted back in


async def test_a_page_asks_for_its_vouched_person_only_and_a_sample_stays_put(asking: LiveIngest) -> None:
    key, identity = await quick_key(asking, PAGE)
    sampled_key, sampled_identity = await quick_key(asking, PAGE, sample=0.5)
    page = {"Authorization": f"Bearer {key}", "Origin": PAGE}
    person = f"w-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        await known(client, asking, sampled_key)
        preflight = await client.options(
            f"{asking.url}/v1/prompt", headers={"Origin": PAGE, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 204 and "GET" in preflight.headers["access-control-allow-methods"]
        reply = await client.get(
            f"{asking.url}/v1/prompt", headers=page,
            params={"respondent_id": person, "respondent_hash": identity_hash(identity, person), "survey_id": "q4"},
        )  # fmt: skip
        assert reply.status_code == 200 and reply.json()["show"] is True, reply.text
        assert reply.headers["access-control-allow-origin"] == PAGE

        # What an attacker with the page's key tries: somebody else's answer, another origin, no origin.
        for headers, params, status, code in (
            (page, {"respondent_id": "user-1842"}, 401, "identity_unverified"),
            (page, {"respondent_id": "user-1842", "respondent_hash": identity_hash(identity, person)}, 401,
             "identity_unverified"),
            ({**page, "Origin": "https://evil.example"}, {"respondent_id": person}, 403, "origin_not_allowed"),
            ({"Authorization": page["Authorization"]}, {"respondent_id": person}, 403, "origin_required"),
            (page, {"respondent_id": person, "extra": "x"}, 422, "invalid_query"),
            (page, {}, 422, "invalid_query"),
        ):  # fmt: skip
            bad = await client.get(f"{asking.url}/v1/prompt", headers=headers, params=params)
            assert bad.status_code == status and bad.json()["code"] == code, (params, bad.text)
        twice = await client.get(f"{asking.url}/v1/prompt?respondent_id=a&respondent_id=b", headers=page)
        assert twice.status_code == 422 and twice.json()["errors"][0]["field"] == "respondent_id", twice.text

        # --sample 0.5: about half the people, each the same on every ask.
        sampled = {"Authorization": f"Bearer {sampled_key}", "Origin": PAGE}
        people = [f"s-{n}-{uuid.uuid4().hex[:6]}" for n in range(80)]

        async def shown(who: str) -> bool:
            body = await prompt(
                client, asking, sampled, respondent_id=who, respondent_hash=identity_hash(sampled_identity, who)
            )
            assert body["show"] or (body["reason"] == "not_sampled" and body["next_at"] is not None), body
            return bool(body["show"])

        first = [await shown(p) for p in people]
        assert 20 <= sum(first) <= 60, sum(first)
        assert [await shown(p) for p in people[:20]] == first[:20]
