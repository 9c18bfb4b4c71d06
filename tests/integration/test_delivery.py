"""Delivery as deployed (`nps delivery`, real broker and PostgreSQL) to a real HTTP receiver run by
the test: signed Standard Webhooks verified with the `standardwebhooks` package, one delivery per
(subscription, event) whatever Kafka redelivers, retries, Retry-After, timeouts that delay no one
else, 410 and 4xx, refused addresses, erasure."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from delivery_service import repository, subscriptions
from delivery_service.subscriptions import NewSubscription
from services.embedded import free_port
from shared.db import make_engine
from shared.events import FollowUpCreated, RespondentErased, TicketOpened, TicketUpdated
from shared.kafka import ensure_topics
from shared.sealed import Sealer
from shared.settings import Topics
from tests.conftest import fresh_database
from tests.helpers import (
    TEST_SECRETS_KEY,
    Call,
    Receiver,
    ServiceProcess,
    eventually,
    fired_alert,
    nps,
    nps_env,
    nps_here,
    produce,
    received,
    receiving,
    start_service,
    started_producer,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as found:
        yield found


@dataclass
class LiveDelivery:
    process: ServiceProcess
    topics: Topics
    bootstrap: str
    database_url: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def subscribe(self, client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
        reply = await client.post(f"{self.process.url}/v1/webhooks", json=body, headers=self.auth)
        assert reply.status_code == 201, reply.text
        return dict(reply.json())

    async def deliveries(self, client: httpx.AsyncClient, subscription_id: str, **params: str) -> list[dict[str, Any]]:
        reply = await client.get(
            f"{self.process.url}/v1/webhooks/{subscription_id}/deliveries", params=params, headers=self.auth
        )
        assert reply.status_code == 200, reply.text
        return list(reply.json()["deliveries"])


def live_delivery(pg_admin_url: str, bootstrap: str, workdir: Path, **settings: str) -> LiveDelivery:
    topics = Topics(f"t{uuid.uuid4().hex[:10]}")
    asyncio.run(ensure_topics(bootstrap, topics.all(), 3))
    database_url = fresh_database(pg_admin_url)
    fast = {
        "NPS_DELIVERY_KEY_REFRESH_S": "0.2",
        "NPS_DELIVERY_REFRESH_S": "0.2",
        "NPS_DELIVERY_POLL_S": "0.05",
        "NPS_DELIVERY_RETRY_SCHEDULE_S": "[0.3, 0.3, 0.3]",  # a day's schedule, in a second
        "NPS_DELIVERY_ALLOW_PRIVATE_URLS": "true",  # the receiver is on 127.0.0.1
        "NPS_DELIVERY_TIMEOUT_S": "1",
        "NPS_DELIVERY_LEASE_S": "5",
    }
    env = nps_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPS_TOPIC_NAMESPACE=topics.namespace,
        **{**fast, **settings},
    )
    created = nps_here(
        "keys", "create", f"hooks-{uuid.uuid4().hex[:6]}", "--scope", "webhooks:read,webhooks:write", env=env
    )
    assert created.returncode == 0, created.stderr
    process = start_service("delivery", env, workdir / "delivery.log", free_port())
    return LiveDelivery(process, topics, bootstrap, database_url, created.stdout.strip())


@pytest.fixture
def delivery(pg_admin_url: str, bootstrap: str, tmp_path: Path) -> Iterator[LiveDelivery]:
    live = live_delivery(pg_admin_url, bootstrap, tmp_path)
    yield live
    assert live.process.stop() == 0, live.process.log.read_text()[-3000:]


def opened(ticket: str, person: str = "u-1", comment: str | None = "slow checkout") -> TicketOpened:
    return TicketOpened(
        ticket_id=ticket, response_id=f"r-{ticket}", respondent_id=person, score=2, comment=comment, channel="web",
        answered_at=T0, created_at=T0,
    )  # fmt: skip


def updated(ticket: str, version: int, status: str, person: str | None = "u-1") -> TicketUpdated:
    return TicketUpdated(
        ticket_id=ticket, version=version, response_id=f"r-{ticket}", respondent_id=person, score=2,
        status=status, priority="normal", channel="web", created_at=T0,  # type: ignore[arg-type]
        updated_at=T0 + timedelta(minutes=version), change={"status": status}, actor="tests",
    )  # fmt: skip


def followup(fid: str, kind: str, person: str = "u-2") -> FollowUpCreated:
    return FollowUpCreated(
        followup_id=fid, kind=kind, response_id=f"r-{fid}", respondent_id=person, score=10, channel="web",
        created_at=T0,
    )  # fmt: skip


async def publish(live: LiveDelivery, topic: str, events: list[Any], key: bytes = b"u-1") -> None:
    async with started_producer(live.bootstrap) as producer:
        await produce(producer, topic, [(key, e.to_bytes()) for e in events])


def verified(secret: str, call: Call) -> dict[str, Any]:
    """The body, once `standardwebhooks` (not our code) accepted its signature."""
    return dict(Webhook(secret).verify(call.body, call.headers))


async def test_events_reach_subscribers_signed_in_order_once(delivery: LiveDelivery, receiver: Receiver) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        tickets = await delivery.subscribe(
            client, url=receiver.url("/support"), events=["TicketOpened", "TicketUpdated"], description="desk"
        )
        referrals = await delivery.subscribe(
            client, url=receiver.url("/crm"), events=["FollowUpCreated"], filters={"kinds": ["referral"]}
        )
        assert tickets["secret"].startswith("whsec_") and tickets["status"] == "active"
        shown = await client.get(
            f"{delivery.process.url}/v1/webhooks/{tickets['subscription_id']}", headers=delivery.auth
        )
        assert shown.status_code == 200 and shown.json()["secret"] is None  # never shown again
        await asyncio.sleep(0.5)  # the consumer sees subscriptions at its next batch

        ticket_events = [opened("tk_a"), updated("tk_a", 2, "in_progress"), updated("tk_a", 3, "contacted")]
        await publish(delivery, delivery.topics.tickets, ticket_events)
        await publish(delivery, delivery.topics.followups, [followup("f1", "referral"), followup("f2", "education")])

        async def arrived() -> bool:
            return len(receiver.to("/support")) >= 3 and len(receiver.to("/crm")) >= 1

        await eventually(arrived, timeout=20)
        support = [verified(tickets["secret"], c) for c in receiver.to("/support")]
        assert [b["type"] for b in support] == ["TicketOpened", "TicketUpdated", "TicketUpdated"]
        assert [b["data"].get("version") for b in support] == [None, 2, 3]  # a ticket's updates in order
        assert support[0]["data"] == json.loads(ticket_events[0].to_bytes())  # the event as on the topic
        assert support[0]["timestamp"].startswith("2026-11-26T09:00:00")
        crm = [verified(referrals["secret"], c) for c in receiver.to("/crm")]
        assert [b["data"]["followup_id"] for b in crm] == ["f1"]  # the education follow-up filtered out
        with pytest.raises(Exception, match="signature"):  # signed with this subscription's secret only
            Webhook(referrals["secret"]).verify(receiver.to("/support")[0].body, receiver.to("/support")[0].headers)

        # Kafka redelivers (or ingest replays) the same event: the same delivery, not a second one.
        first_id = receiver.to("/support")[0].headers["webhook-id"]
        await publish(delivery, delivery.topics.tickets, ticket_events[:1])
        await publish(delivery, delivery.topics.tickets, [updated("tk_a", 4, "resolved")])
        await eventually(received(receiver, "/support", 4), timeout=20)
        await asyncio.sleep(0.5)
        assert [c.headers["webhook-id"] for c in receiver.to("/support")].count(first_id) == 1
        assert len(receiver.to("/support")) == 4
        listed = await delivery.deliveries(client, tickets["subscription_id"], status="delivered")
        assert len(listed) == 4 and all(len(d["attempts"]) == 1 for d in listed)
        assert listed[-1]["delivery_id"] == first_id  # newest first


async def test_retries_with_the_same_id_honour_retry_after_and_give_up(
    delivery: LiveDelivery, receiver: Receiver
) -> None:
    receiver.plan["/flaky"] = [500, 503]
    receiver.plan["/busy"] = [(429, {"Retry-After": "2"})]
    receiver.plan["/broken"] = [500, 500, 500, 500, 500]
    receiver.plan["/bad"] = [400]
    async with httpx.AsyncClient(timeout=10) as client:
        subs = {
            path: await delivery.subscribe(client, url=receiver.url(path), events=["TicketOpened"])
            for path in ("/flaky", "/busy", "/broken", "/bad")
        }
        await asyncio.sleep(0.5)
        await publish(delivery, delivery.topics.tickets, [opened("tk_b")])

        async def settled() -> bool:
            return (
                len(receiver.to("/flaky")) >= 3 and len(receiver.to("/busy")) >= 2 and len(receiver.to("/broken")) >= 4
            )

        await eventually(settled, timeout=30)
        flaky = receiver.to("/flaky")
        assert len({c.headers["webhook-id"] for c in flaky}) == 1  # a retry is the same message
        for c in flaky:
            verified(subs["/flaky"]["secret"], c)  # each attempt signed afresh
        busy = receiver.to("/busy")
        assert busy[1].at - busy[0].at >= 1.8  # Retry-After: 2, not the 0.3 s schedule
        assert len(receiver.to("/bad")) == 1  # 400: failed at once

        async def recorded() -> bool:
            broken = await delivery.deliveries(client, subs["/broken"]["subscription_id"])
            return bool(broken) and broken[0]["status"] == "failed"

        await eventually(recorded, timeout=10)
        assert len(receiver.to("/broken")) == 4  # the first attempt and the schedule's three retries
        flaky_d = (await delivery.deliveries(client, subs["/flaky"]["subscription_id"]))[0]
        assert flaky_d["status"] == "delivered"
        assert [a["status_code"] for a in flaky_d["attempts"]] == [500, 503, 200]
        bad = (await delivery.deliveries(client, subs["/bad"]["subscription_id"], status="failed"))[0]
        assert bad["last_status_code"] == 400 and len(bad["attempts"]) == 1

        # A failed delivery retried by hand goes out again, with the same webhook-id.
        retry = await client.post(
            f"{delivery.process.url}/v1/webhooks/{subs['/bad']['subscription_id']}/deliveries/{bad['delivery_id']}/retry",
            headers=delivery.auth,
        )
        assert retry.status_code == 202, retry.text
        await eventually(received(receiver, "/bad", 2), timeout=10)
        assert receiver.to("/bad")[1].headers["webhook-id"] == bad["delivery_id"]
        again = await client.post(
            f"{delivery.process.url}/v1/webhooks/{subs['/flaky']['subscription_id']}/deliveries/{flaky_d['delivery_id']}/retry",
            headers=delivery.auth,
        )
        assert again.status_code == 409 and again.json()["code"] == "not_failed"


async def test_a_hanging_endpoint_delays_no_one_else_and_410_disables(
    delivery: LiveDelivery, receiver: Receiver
) -> None:
    receiver.plan["/hangs"] = ["hang"] * 10
    receiver.plan["/gone"] = [410]
    async with httpx.AsyncClient(timeout=10) as client:
        hangs = await delivery.subscribe(client, url=receiver.url("/hangs"), events=["TicketOpened"])
        await delivery.subscribe(client, url=receiver.url("/healthy"), events=["TicketOpened"])
        gone = await delivery.subscribe(client, url=receiver.url("/gone"), events=["TicketOpened"])
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await publish(delivery, delivery.topics.tickets, [opened(f"tk_h{i}") for i in range(40)])
        await eventually(received(receiver, "/healthy", 40), timeout=20)
        assert receiver.to("/healthy")[-1].at - started < 5  # while /hangs times out attempt after attempt

        async def disabled() -> bool:
            reply = await client.get(
                f"{delivery.process.url}/v1/webhooks/{gone['subscription_id']}", headers=delivery.auth
            )
            return bool(reply.json()["status"] == "disabled")

        await eventually(disabled, timeout=10)
        shown = (
            await client.get(f"{delivery.process.url}/v1/webhooks/{gone['subscription_id']}", headers=delivery.auth)
        ).json()
        assert "410" in shown["disabled_reason"]
        await asyncio.sleep(0.5)  # attempts that were in flight when it answered 410 end
        sent = len(receiver.to("/gone"))
        await asyncio.sleep(1.5)
        assert len(receiver.to("/gone")) == sent <= 16  # only the attempts in flight with the 410, then nothing

        async def timed_out() -> bool:
            found = await delivery.deliveries(client, hangs["subscription_id"])
            return any(a["error"] == "timed out" for d in found for a in d["attempts"])

        await eventually(timed_out, timeout=10)


async def test_private_addresses_are_refused_unless_allowed(
    pg_admin_url: str, bootstrap: str, tmp_path: Path, receiver: Receiver
) -> None:
    live = await asyncio.to_thread(
        live_delivery, pg_admin_url, bootstrap, tmp_path, NPS_DELIVERY_ALLOW_PRIVATE_URLS="false"
    )
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for url, why in [
                (receiver.url("/x"), "https"),
                ("https://127.0.0.1/hook", "not a public address"),
                ("https://169.254.169.254/latest/meta-data", "not a public address"),
                ("https://[::1]/hook", "not a public address"),
                ("https://localhost/hook", "local name"),
                ("https://user:pw@example.com/hook", "credentials"),
            ]:
                reply = await client.post(
                    f"{live.process.url}/v1/webhooks", json={"url": url, "events": ["TicketOpened"]}, headers=live.auth
                )
                assert reply.status_code == 422, (url, reply.text)
                assert why in reply.json()["errors"][0]["problem"], (url, reply.text)
            ok = await client.post(
                f"{live.process.url}/v1/webhooks",
                json={"url": "https://hooks.example.com/nps", "events": ["TicketOpened"]},
                headers=live.auth,
            )
            assert ok.status_code == 201
    finally:
        assert live.process.stop() == 0


async def test_erasure_cancels_what_names_the_person_and_drops_their_payloads(
    delivery: LiveDelivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        sub = await delivery.subscribe(client, url=receiver.url("/desk"), events=["TicketOpened", "TicketUpdated"])
        paused = await client.patch(
            f"{delivery.process.url}/v1/webhooks/{sub['subscription_id']}",
            json={"status": "paused"},
            headers=delivery.auth,
        )
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        await asyncio.sleep(0.5)
        await publish(
            delivery, delivery.topics.tickets, [opened("tk_e", person="erase-me", comment="call me at 555-0199")]
        )
        await publish(delivery, delivery.topics.tickets, [opened("tk_k", person="keep-me")], key=b"keep-me")

        async def queued() -> bool:
            return len(await delivery.deliveries(client, sub["subscription_id"], status="pending")) == 2

        await eventually(queued, timeout=15)
        erased = RespondentErased(respondent_id="erase-me", erasure_id="er-1", requested_at=T0 + timedelta(hours=1))
        await publish(delivery, delivery.topics.responses, [erased], key=b"erase-me")
        # Follow-up's redacted update (no respondent id) still goes out; a late event from before
        # the erasure that names the person does not.
        late = updated("tk_e", 2, "in_progress", person="erase-me")
        await publish(
            delivery, delivery.topics.tickets, [late, updated("tk_e", 3, "closed", person=None)], key=b"erase-me"
        )

        async def cancelled() -> bool:
            return len(await delivery.deliveries(client, sub["subscription_id"], status="cancelled")) == 1

        await eventually(cancelled, timeout=15)
        resumed = await client.patch(
            f"{delivery.process.url}/v1/webhooks/{sub['subscription_id']}",
            json={"status": "active"},
            headers=delivery.auth,
        )
        assert resumed.status_code == 200
        await eventually(received(receiver, "/desk", 2), timeout=15)
        await asyncio.sleep(0.5)
        bodies = [verified(sub["secret"], c)["data"] for c in receiver.to("/desk")]
        assert sorted((b["ticket_id"], b.get("version")) for b in bodies) == [("tk_e", 3), ("tk_k", None)]
        assert all(b.get("respondent_id") != "erase-me" for b in bodies)

    engine = make_engine(delivery.database_url)
    try:
        async with engine.connect() as conn:
            tables = (
                (
                    await conn.execute(
                        sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'delivery'")
                    )
                )
                .scalars()
                .all()
            )
            for table in tables:
                dump = await conn.scalar(
                    sa.text(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM delivery.{table} t")
                )
                assert "erase-me" not in dump and "555-0199" not in dump, table
                assert b"erase-me".hex() not in dump, table  # nor in a bytea's hex text
            payloads = await conn.scalar(
                sa.text("SELECT string_agg(encode(payload, 'escape'), ' ') FROM delivery.deliveries")
            )
            assert "erase-me" not in (payloads or "") and "keep-me" in (payloads or "")
    finally:
        await engine.dispose()


async def test_the_cli_manages_subscriptions_like_the_api(delivery: LiveDelivery, receiver: Receiver) -> None:
    env = {**delivery.process.env}

    def run(*args: str) -> Any:
        return nps_here("webhooks", *args, env=env)

    # The first command from a terminal of its own (the entry point), the rest in this process.
    created = await asyncio.to_thread(
        nps, "webhooks", "create", "--url", receiver.url("/cli"), "--event", "TicketOpened", "--segment", "channel:web",
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    subscription_id, secret = created.stdout.split()
    assert subscription_id.startswith("wh_") and secret.startswith("whsec_") and "only this once" in created.stderr

    tested = await asyncio.to_thread(run, "test", subscription_id)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert json.loads(tested.stdout)["status_code"] == 200
    test_call = receiver.to("/cli")[-1]
    assert verified(secret, test_call)["type"] == "WebhookTest"  # signed like any delivery

    listed = await asyncio.to_thread(run, "list")
    assert f"{subscription_id}\tactive\tTicketOpened\tstandard\t127.0.0.1" in listed.stdout
    assert (await asyncio.to_thread(run, "pause", subscription_id)).returncode == 0
    shown = await asyncio.to_thread(run, "show", subscription_id)
    assert json.loads(shown.stdout)["status"] == "paused" and "whsec_" not in shown.stdout

    rotated = await asyncio.to_thread(run, "rotate", subscription_id, "--overlap-s", "60")
    assert rotated.returncode == 0 and rotated.stdout.strip().startswith("whsec_")
    assert (await asyncio.to_thread(run, "resume", subscription_id)).returncode == 0
    await asyncio.sleep(0.5)
    await publish(delivery, delivery.topics.tickets, [opened("tk_cli")])
    await eventually(received(receiver, "/cli", 2), timeout=15)
    delivered = receiver.to("/cli")[-1]
    verified(rotated.stdout.strip(), delivered)  # the new secret signs
    verified(secret, delivered)  # and, during the overlap, the old one

    await eventually(lambda: _delivered_listed(run, subscription_id), timeout=10)
    refused = await asyncio.to_thread(run, "create", "--url", "ftp://x.example/h", "--event", "TicketOpened")
    assert refused.returncode == 2 and "http:// or https://" in refused.stderr
    unknown = await asyncio.to_thread(run, "create", "--url", receiver.url("/x"), "--event", "Nope")
    assert unknown.returncode == 2 and "events" in unknown.stderr
    assert (await asyncio.to_thread(run, "delete", subscription_id)).returncode == 0
    assert (await asyncio.to_thread(run, "show", subscription_id)).returncode == 1
    audit = await asyncio.to_thread(nps_here, "audit", "--action", "webhook.changed", env=env)
    assert audit.stdout.count(subscription_id) == 3  # pause, rotate, resume


async def _delivered_listed(run: Callable[..., Any], subscription_id: str) -> bool:
    listed = await asyncio.to_thread(run, "deliveries", subscription_id, "--status", "delivered")
    return bool("TicketOpened\tdelivered\t1 attempt(s)\t200" in listed.stdout)


async def test_a_worker_killed_mid_queue_loses_nothing_and_repeats_only_with_the_same_id(
    pg_admin_url: str, bootstrap: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.delay["/slow"] = 0.05
    live = await asyncio.to_thread(live_delivery, pg_admin_url, bootstrap, tmp_path, NPS_DELIVERY_LEASE_S="2")
    async with httpx.AsyncClient(timeout=10) as client:
        sub = await live.subscribe(client, url=receiver.url("/slow"), events=["TicketOpened"])
    await asyncio.sleep(0.5)
    events = [opened(f"tk_k{i}", person=f"p{i}") for i in range(400)]
    await publish(live, live.topics.tickets, events)
    await eventually(received(receiver, "/slow", 40), timeout=20)
    live.process.process.kill()  # SIGKILL: attempts in flight, outcomes not recorded, a queue pending
    live.process.process.wait()
    assert len({c.headers["webhook-id"] for c in receiver.to("/slow")}) < 400
    again = await asyncio.to_thread(
        start_service, "delivery", live.process.env, tmp_path / "again.log", int(live.process.url.rsplit(":", 1)[1])
    )
    try:

        async def all_arrived() -> bool:
            return len({c.headers["webhook-id"] for c in receiver.to("/slow")}) >= 400

        await eventually(all_arrived, timeout=60)
        bodies: dict[str, bytes] = {}
        for call in receiver.to("/slow"):
            data = verified(sub["secret"], call)["data"]
            first = bodies.setdefault(call.headers["webhook-id"], json.dumps(data, sort_keys=True).encode())
            assert first == json.dumps(data, sort_keys=True).encode()  # a repeat is the same message
        assert sorted(json.loads(b)["ticket_id"] for b in bodies.values()) == sorted(e.ticket_id for e in events)
    finally:
        assert again.stop() == 0


async def test_a_ticket_s_updates_wait_for_its_failing_first_event_and_a_failing_endpoint_is_disabled(
    pg_admin_url: str, bootstrap: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.plan["/ordered"] = [500, 503]  # TicketOpened fails twice before it gets through
    receiver.plan["/down"] = [500] * 100
    live = await asyncio.to_thread(
        live_delivery, pg_admin_url, bootstrap, tmp_path, NPS_DELIVERY_DISABLE_AFTER_S="1.5",
        NPS_DELIVERY_RETRY_SCHEDULE_S="[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]",
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            ordered = await live.subscribe(
                client, url=receiver.url("/ordered"), events=["TicketOpened", "TicketUpdated"]
            )
            down = await live.subscribe(client, url=receiver.url("/down"), events=["TicketOpened"])
            await asyncio.sleep(0.5)
            await publish(
                live,
                live.topics.tickets,
                [opened("tk_o"), updated("tk_o", 2, "in_progress"), updated("tk_o", 3, "contacted")],
            )
            await eventually(received(receiver, "/ordered", 5), timeout=20)
            seen = [verified(ordered["secret"], c)["data"] for c in receiver.to("/ordered")]
            # The first three are TicketOpened's attempts; its updates only after it got through.
            assert [(d["type"], d.get("version")) for d in seen] == [
                ("TicketOpened", None), ("TicketOpened", None), ("TicketOpened", None),
                ("TicketUpdated", 2), ("TicketUpdated", 3),
            ]  # fmt: skip

            async def disabled() -> bool:
                reply = await client.get(f"{live.process.url}/v1/webhooks/{down['subscription_id']}", headers=live.auth)
                return bool(reply.json()["status"] == "disabled")

            await eventually(disabled, timeout=20)
            shown = (
                await client.get(f"{live.process.url}/v1/webhooks/{down['subscription_id']}", headers=live.auth)
            ).json()
            assert shown["disabled_reason"].startswith("every attempt failed since ")
        audit = await asyncio.to_thread(nps, "audit", "--action", "webhook.disabled", env=live.process.env)
        assert down["subscription_id"] in audit.stdout and ordered["subscription_id"] not in audit.stdout
    finally:
        assert live.process.stop() == 0


async def test_finished_deliveries_past_retention_are_pruned_pending_ones_never(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        body = NewSubscription.model_validate({"url": "https://hooks.example.com/x", "events": ["TicketOpened"]})
        sub = await subscriptions.create(engine, Sealer.of(TEST_SECRETS_KEY), body, False, "tests")
        now = datetime.now(UTC)
        old = now - timedelta(days=40)
        rows = [
            (f"msg_{i:032x}", sub.subscription_id, "TicketOpened", f"{sub.subscription_id}/tk_{i}", None, old, b"{}",
             "pending", old, old)
            for i in range(3)
        ]  # fmt: skip
        async with engine.begin() as conn:
            await repository.enqueue(conn, rows)
            await conn.execute(
                sa.text(
                    "UPDATE delivery.deliveries SET status = CASE WHEN delivery_id LIKE '%0' THEN 'delivered' "
                    "WHEN delivery_id LIKE '%1' THEN 'failed' ELSE 'pending' END, "
                    "finished_at = CASE WHEN delivery_id LIKE '%2' THEN NULL ELSE CAST(:old AS timestamptz) END"
                ),
                {"old": old},
            )
            assert await repository.prune(conn, 30) == 2
            assert await repository.prune(conn, 30) == 0
            left = (await conn.execute(sa.text("SELECT status FROM delivery.deliveries"))).scalars().all()
        assert left == ["pending"]
    finally:
        await engine.dispose()


async def test_the_subscription_api_validates_pages_changes_and_deletes(
    delivery: LiveDelivery, receiver: Receiver
) -> None:
    base = f"{delivery.process.url}/v1/webhooks"
    async with httpx.AsyncClient(timeout=10, headers=delivery.auth) as client:
        made = [await delivery.subscribe(client, url=receiver.url(f"/p{i}"), events=["TicketOpened"]) for i in range(3)]
        first = await client.get(base, params={"limit": 2})
        assert first.status_code == 200 and len(first.json()["subscriptions"]) == 2
        rest = await client.get(base, params={"limit": 2, "after": first.json()["next_after"]})
        listed = [s["subscription_id"] for s in first.json()["subscriptions"] + rest.json()["subscriptions"]]
        assert sorted(listed) == sorted(s["subscription_id"] for s in made) and rest.json()["next_after"] is None
        assert all(s["secret"] is None for s in first.json()["subscriptions"])

        one = made[0]["subscription_id"]
        changed = await client.patch(
            f"{base}/{one}",
            json={"events": ["TicketUpdated", "TicketOpened"], "filters": {"segments": ["channel:web"]},
                  "format": "slack", "description": "desk", "url": receiver.url("/moved")},
        )  # fmt: skip
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert body["events"] == ["TicketOpened", "TicketUpdated"] and body["filters"]["segments"] == ["channel:web"]
        assert body["format"] == "slack" and body["url"].endswith("/moved") and body["secret"] is None
        for patch, field in (
            ({}, "body"),
            ({"url": "ftp://x.example/h"}, "url"),
            ({"events": ["Nope"]}, "events"),
            ({"status": "disabled"}, "status"),
            ({"filters": {"segments": ["bad segment"]}}, "filters"),
        ):
            refused = await client.patch(f"{base}/{one}", json=patch)
            assert refused.status_code == 422, (patch, refused.text)
            assert field in json.dumps(refused.json()["errors"]), (patch, refused.text)
        assert (await client.patch(f"{base}/wh_{'0' * 24}", json={"status": "paused"})).status_code == 404
        assert (await client.get(f"{base}/not-an-id")).status_code == 422
        assert (await client.get(f"{base}/{one}/deliveries", params={"status": "lost"})).status_code == 422
        assert (await client.delete(f"{base}/{one}")).status_code == 204
        assert (await client.get(f"{base}/{one}")).status_code == 404
        assert (await client.delete(f"{base}/{one}")).status_code == 404
        reader = await client.post(base, json={"url": receiver.url("/x"), "events": []})
        assert reader.status_code == 422 and "events" in reader.text


async def test_alerts_reach_a_slack_channel_for_their_segment(delivery: LiveDelivery, receiver: Receiver) -> None:
    """nps.alerts.v2 through delivery: a Slack subscription filtered to one segment gets that
    segment's AlertFired as a Slack message (the numbers that explain it), and nothing else."""
    async with httpx.AsyncClient(timeout=10) as client:
        await delivery.subscribe(
            client,
            url=receiver.url("/slack"),
            events=["AlertFired"],
            format="slack",
            filters={"segments": ["region:eu"]},
        )
        await asyncio.sleep(0.5)  # the consumer sees subscriptions at its next batch
        events = [fired_alert("al_eu", "region:eu", T0), fired_alert("al_us", "region:us", T0)]
        await publish(delivery, delivery.topics.alerts, events, key=b"region")
        await eventually(received(receiver, "/slack", 1), timeout=20)
        await asyncio.sleep(0.5)
    (call,) = receiver.to("/slack")
    body = json.loads(call.body)
    assert "region:eu" in body["text"] and "20.0 points" in body["text"]
    fields = json.dumps(body["blocks"])
    assert "product:atlas (-15.0)" in fields and "0.004 / 0.01" in fields


async def test_a_test_send_waits_for_a_slow_endpoint_beyond_the_database_deadline(
    pg_admin_url: str, bootstrap: str, tmp_path: Path, receiver: Receiver
) -> None:
    """The request deadline (NPS_DELIVERY_DB_TIMEOUT_S) is the database's: a test send waits for the
    endpoint as long as the delivery timeout allows, and reports its answer, not a 503."""
    delivery = await asyncio.to_thread(
        live_delivery, pg_admin_url, bootstrap, tmp_path, NPS_DELIVERY_DB_TIMEOUT_S="0.5", NPS_DELIVERY_TIMEOUT_S="4"
    )
    receiver.delay["/slow"] = 1.5
    try:
        async with httpx.AsyncClient(timeout=10, headers=delivery.auth) as client:
            made = await delivery.subscribe(client, url=receiver.url("/slow"), events=["TicketOpened"])
            tested = await client.post(f"{delivery.process.url}/v1/webhooks/{made['subscription_id']}/test")
    finally:
        assert delivery.process.stop() == 0, delivery.process.log.read_text()[-3000:]
    assert tested.status_code == 200, tested.text
    assert tested.json()["delivered"] is True and tested.json()["latency_ms"] >= 1_500, tested.json()
