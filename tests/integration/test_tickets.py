"""The ticket lifecycle through follow-up's real API, loop, broker and database: list, read,
change with If-Match, the transition table, TicketUpdated on the tickets topic, the history, the
audit log, and erasure reaching support's notes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from followup_service.bootstrap import create_app, spec
from followup_service.settings import DEFAULT_SLA, Sla
from followup_service.tickets.domain import revision_ticket_id, ticket_id
from shared.events import (
    RespondentErased,
    TicketOpened,
    TicketSlaBreached,
    TicketUpdated,
    ticket_events,
)
from tests.helpers import (
    Run,
    create_topics,
    eventually,
    keyed,
    produce,
    read_topic,
    running_loop,
    served,
    started_producer,
)
from tests.integration.test_followup import event, settings_for

pytestmark = pytest.mark.integration


async def tickets_listed(client: httpx.AsyncClient, n: int) -> None:
    async def listed() -> bool:
        return len((await client.get("/v1/tickets")).json()["tickets"]) == n

    await eventually(listed)


async def sla_breaches(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """(ticket, deadline) of every TicketSlaBreached on the tickets topic."""
    records = await read_topic(bootstrap, topic, expect=None, timeout=1)
    found = [ticket_events.validate_json(r.value) for r in records]
    return sorted((e.ticket_id, e.deadline) for e in found if isinstance(e, TicketSlaBreached))


async def test_a_ticket_goes_through_its_lifecycle_and_every_change_is_published(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    responses = [event(f"{run}-{i}", score) for i, score in enumerate([2, 5, 0, 9])]
    tickets = [ticket_id(r.response_id) for r in responses if r.score <= 6]
    first = tickets[0]
    app = create_app(settings)
    async with served(app, settings, spec(settings)) as service:
        loop, client = service.loop, service.client
        reader = await service.key(["followups:read"])
        await service.publish(settings.topics.responses, responses)

        async def listed() -> bool:
            page = await client.get("/v1/tickets", params={"status": "open"})
            return page.status_code == 200 and len(page.json()["tickets"]) == 3

        await eventually(listed)

        # Newest first, a page at a time; the cursor walks them all once.
        seen, cursor = [], None
        while True:
            params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/tickets", params=params)).json()
            seen += [t["ticket_id"] for t in page["tickets"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(tickets)
        assert (await client.get("/v1/tickets", params={"older_than": "1h"})).json()["tickets"] == []
        assert (await client.get("/v1/tickets", params={"channel": "email"})).json()["tickets"] == []

        got = await client.get(f"/v1/tickets/{first}")
        assert got.status_code == 200 and got.headers["etag"] == '"1"'
        assert got.json()["status"] == "open" and got.json()["history"] == []

        path = f"/v1/tickets/{first}"
        assert (await client.patch(path, json={"status": "contacted"})).status_code == 428
        forbidden = await client.patch(path, json={"status": "contacted"}, headers={**reader, "If-Match": '"1"'})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "insufficient_scope"

        contacted = await client.patch(
            path,
            json={"status": "contacted", "assignee": "ana", "note": "called, will refund"},
            headers={"If-Match": '"1"'},
        )
        assert contacted.status_code == 200, contacted.text
        assert contacted.headers["etag"] == '"2"' and contacted.json()["first_contact_at"] is not None

        stale = await client.patch(path, json={"status": "resolved"}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412 and stale.json()["code"] == "version_mismatch"
        assert stale.headers["etag"] == '"2"'
        # RFC 9110's strong comparison: well-formed tags that are not the current strong one are 412
        for other in ('W/"2"', '"abc"', '"1", W/"2"', '"02"'):
            refused = await client.patch(path, json={"note": "x"}, headers={"If-Match": other})
            assert (refused.status_code, refused.json()["code"]) == (412, "version_mismatch"), other
        # (and a list holding the current one matches: below, '"1", "2"')
        illegal = await client.patch(path, json={"status": "closed"}, headers={"If-Match": '"2"'})
        assert illegal.status_code == 409 and illegal.json()["code"] == "illegal_transition"
        assert "contacted to closed" in illegal.json()["message"]

        resolved = await client.patch(
            path, json={"status": "resolved", "resolution": "refund"}, headers={"If-Match": '"1", "2"'}
        )
        assert resolved.status_code == 200 and resolved.json()["resolved_at"] is not None
        closed = await client.patch(path, json={"status": "closed"}, headers={"If-Match": "*"})
        reopened = await client.patch(path, json={"status": "open"}, headers={"If-Match": '"4"'})
        assert closed.json()["version"] == 4 and reopened.json()["version"] == 5
        assert reopened.json()["resolution"] is None and reopened.json()["resolved_at"] is None

        history = (await client.get(path)).json()["history"]
        assert [(h["version"], h["status_from"], h["status_to"]) for h in history] == [
            (2, "open", "contacted"),
            (3, "contacted", "resolved"),
            (4, "resolved", "closed"),
            (5, "closed", "open"),
        ]
        assert history[0]["note"] == "called, will refund" and history[0]["actor"].startswith("tests-")

        # Bad input: every parameter is validated, one problem shape.
        for bad in (
            client.get("/v1/tickets/tk_nothex"),
            client.get("/v1/tickets", params={"status": "lost"}),
            client.get("/v1/tickets", params={"limit": 0}),
            client.get("/v1/tickets", params={"older_than": "soon"}),
            client.get("/v1/tickets", params={"cursor": "bm90LWEtY3Vyc29y"}),
            client.patch(path, json={}, headers={"If-Match": "*"}),
            client.patch(path, json={"status": "done"}, headers={"If-Match": "*"}),
            client.patch(path, json={"priority": "high"}, headers={"If-Match": "*"}),
            client.patch(path, json={"note": "x"}, headers={"If-Match": "three"}),
            client.patch(path, json={"note": "x"}, headers={"If-Match": "3"}),  # not an entity tag: no quotes
            client.patch(path, json={"note": "x"}, headers={"If-Match": '"3'}),
        ):
            reply = await bad
            assert reply.status_code == 422, reply.text
            assert reply.json()["code"] == "invalid_request" and reply.json()["errors"], reply.text
        missing = await client.patch(f"/v1/tickets/tk_{'0' * 32}", json={"note": "x"}, headers={"If-Match": "*"})
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"

        # Every change is on the tickets topic with the ticket's full state, in version order.
        records = await read_topic(bootstrap, settings.topics.tickets, expect=7)
        updates = [e for e in (ticket_events.validate_json(r.value) for r in records) if isinstance(e, TicketUpdated)]
        assert [(u.version, u.status) for u in updates] == [
            (2, "contacted"),
            (3, "resolved"),
            (4, "closed"),
            (5, "open"),
        ]
        assert updates[0].assignee == "ana" and updates[0].change == {
            "status": "contacted",
            "assignee": "ana",
            "note": "added",
        }
        assert updates[0].respondent_id == responses[0].respondent_id and updates[0].comment == responses[0].comment
        assert all(r.key == first.encode() for r in records if b"TicketUpdated" in r.value)

        async with loop.engine.connect() as conn:
            audited = (
                await conn.execute(
                    sa.text("SELECT count(*) FROM auth.audit_log WHERE action = 'ticket.updated' AND subject = :t"),
                    {"t": first},
                )
            ).scalar()
        assert audited == 4

        # Erasure takes support's notes about the person with it.
        erased = RespondentErased(
            erasure_id=uuid.uuid4().hex, respondent_id=responses[0].respondent_id, requested_at=datetime.now(UTC)
        )
        await service.publish(settings.topics.responses, [erased])

        async def notes_gone() -> bool:
            async with loop.engine.connect() as conn:
                notes = (
                    await conn.execute(
                        sa.text(
                            "SELECT count(*) FROM followup.ticket_history WHERE ticket_id = :t AND note IS NOT NULL"
                        ),
                        {"t": first},
                    )
                ).scalar()
            return notes == 0

        await eventually(notes_gone)


async def test_one_active_ticket_per_person_revisions_re_route_and_erasure_closes_tickets(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    run = Run()
    first = [
        run.submitted("a1", 2, "ann", comment="slow"),
        run.submitted("a2", 4, "ann", comment="still slow"),  # joins ann's open ticket
        run.submitted("b1", 1, "bob"),
        run.submitted("c1", 10, "cyd"),
        run.revised("b1", 9, 2, "bob"),  # bob changed his mind: his ticket resolves, he is a promoter now
        run.revised("c1", 3, 2, "cyd"),  # cyd too, the other way: a ticket
        run.revised("a1", 5, 2, "ann"),  # within detractor: ann's ticket gets the new score
        run.submitted("a1", 2, "ann", comment="slow"),  # a redelivery changes nothing
    ]
    async with started_producer(bootstrap) as producer, running_loop(settings, spec(settings)) as loop:
        await produce(producer, settings.topics.responses, keyed(first))

        async def tickets() -> dict[str, Any]:
            async with loop.engine.connect() as conn:
                rows = await conn.execute(
                    sa.text(
                        "SELECT t.ticket_id, t.response_id, t.status, t.resolution, t.score, t.version, t.comment "
                        "FROM followup.tickets t WHERE t.response_id LIKE :run"
                    ),
                    {"run": f"{run.id}-%"},
                )
                return {r.response_id.removeprefix(f"{run.id}-"): r for r in rows}

        async def settled() -> bool:
            found = await tickets()
            return set(found) == {"a1", "b1", "c1"} and found["a1"].version == 3

        await eventually(settled)
        found = await tickets()
        assert (found["a1"].status, found["a1"].score, found["a1"].comment) == ("open", 5, "still slow")
        assert (found["b1"].status, found["b1"].resolution) == ("resolved", "score_revised")
        assert found["c1"].status == "open" and found["c1"].ticket_id == revision_ticket_id(
            run.revised("c1", 3, 2, "cyd")
        )
        async with loop.engine.connect() as conn:
            kinds = {
                r.response_id.removeprefix(f"{run.id}-"): (r.kind, r.version, r.ticket_id)
                for r in await conn.execute(
                    sa.text(
                        "SELECT response_id, kind, version, ticket_id FROM followup.followups WHERE response_id LIKE :r"
                    ),
                    {"r": f"{run.id}-%"},
                )
            }
        assert kinds == {
            "a1": ("ticket", 2, ticket_id(run.of("a1"))),
            "a2": ("ticket", 1, ticket_id(run.of("a1"))),
            "b1": ("referral", 2, None),
            "c1": ("ticket", 2, found["c1"].ticket_id),
        }

        # Erasure closes ann's active ticket, clears her data, and says so on the topic, redacted.
        erased = RespondentErased(
            erasure_id=uuid.uuid4().hex, respondent_id=run.of("ann"), requested_at=datetime.now(UTC)
        )
        await produce(producer, settings.topics.responses, keyed([erased]))

        async def closed() -> bool:
            return (await tickets())["a1"].resolution == "erased"

        await eventually(closed)
        assert (await tickets())["a1"].status == "closed" and (await tickets())["a1"].comment is None

    records = await read_topic(bootstrap, settings.topics.tickets, expect=None, timeout=3)
    events = [ticket_events.validate_json(r.value) for r in records]
    opened = sorted(e.response_id.removeprefix(f"{run.id}-") for e in events if isinstance(e, TicketOpened))
    assert opened == ["a1", "b1", "c1"]  # a2 joined a1's ticket: no second TicketOpened
    ann = sorted(
        (e for e in events if isinstance(e, TicketUpdated) and e.ticket_id == ticket_id(run.of("a1"))),
        key=lambda e: e.version,
    )
    assert [(e.version, e.change.get("response_id"), e.actor) for e in ann[:2]] == [
        (2, run.of("a2"), "follow-up"),
        (3, run.of("a1"), "follow-up"),
    ]
    last = ann[-1]
    assert (last.status, last.resolution, last.respondent_id, last.comment, last.actor) == (
        "closed",
        "erased",
        None,
        None,
        "erasure",
    )


async def test_a_missed_sla_deadline_is_published_once_per_ticket_and_deadline(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace).model_copy(
        update={
            "sla": {**DEFAULT_SLA, "normal": Sla(first_contact_s=1, resolution_s=3)},
            "outbox_interval_s": 0.2,
            "sla_check_s": 0.2,
        }
    )
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    late, quick = event(f"{run}-late", 2), event(f"{run}-quick", 3)
    app = create_app(settings)
    async with served(app, settings, spec(settings)) as service:
        client = service.client
        await service.publish(settings.topics.responses, [late, quick])
        await tickets_listed(client, 2)
        # The quick one is contacted in time: it never misses its first-contact deadline.
        contacted = await client.patch(
            f"/v1/tickets/{ticket_id(quick.response_id)}", json={"status": "contacted"}, headers={"If-Match": "*"}
        )
        assert contacted.status_code == 200

        async def breaches() -> list[tuple[str, str]]:
            return await sla_breaches(bootstrap, settings.topics.tickets)

        async def both_missed() -> bool:
            return len(await breaches()) == 3

        await eventually(both_missed, timeout=20, every=0.5)
        await asyncio.sleep(1)  # five more ticks: nothing is published twice
        assert await breaches() == sorted(
            [
                (ticket_id(late.response_id), "first_contact"),
                (ticket_id(late.response_id), "resolution"),
                (ticket_id(quick.response_id), "resolution"),
            ]
        )
        exposed = (await client.get("/metrics")).text
        assert 'nps_ticket_sla_breaches_total{deadline="first_contact",priority="normal"}' in exposed
        assert 'nps_tickets_active{age="1h",priority="normal"} 2.0' in exposed
        assert 'nps_ticket_first_contact_seconds_count{priority="normal"}' in exposed


async def test_a_rule_s_own_sla_holds_for_the_tickets_it_opens(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: sla-1\nrules:\n"
        "  - {name: enterprise, when: {category: detractor, attributes: {plan: enterprise}}, action: ticket,"
        " priority: high, sla: {first_contact: 1s, resolution: 2s}}\n"
        "  - {name: detractors, when: {category: detractor}, action: ticket, priority: high}\n"
        "  - {name: others, action: none}\n"
    )
    settings = settings_for(bootstrap, database_url, namespace).model_copy(
        update={"policy": policy, "outbox_interval_s": 0.2, "sla_check_s": 0.2}  # high: the default SLA, 4 h
    )
    await create_topics(settings)
    run = uuid.uuid4().hex[:6]
    vip = event(f"{run}-vip", 1).model_copy(update={"attributes": {"plan": "enterprise"}})
    other = event(f"{run}-other", 1)
    app = create_app(settings)
    async with served(app, settings, spec(settings, app.state.policy)) as service:
        client = service.client
        await service.publish(settings.topics.responses, [vip, other])
        await tickets_listed(client, 2)
        shown = (await client.get(f"/v1/tickets/{ticket_id(vip.response_id)}")).json()
        assert (shown["priority"], shown["first_contact_sla_s"], shown["resolution_sla_s"]) == ("high", 1.0, 2.0)
        plain = (await client.get(f"/v1/tickets/{ticket_id(other.response_id)}")).json()
        assert (plain["first_contact_sla_s"], plain["resolution_sla_s"]) == (None, None)
        explained = (
            await client.post("/v1/policy/explain", json={"score": 1, "attributes": {"plan": "enterprise"}})
        ).json()
        assert (explained["first_contact_sla_s"], explained["resolution_sla_s"]) == (1.0, 2.0)

        async def breaches() -> list[tuple[str, str]]:
            return await sla_breaches(bootstrap, settings.topics.tickets)

        async def both_missed() -> bool:
            return len(await breaches()) == 2

        await eventually(both_missed, timeout=20, every=0.5)
        await asyncio.sleep(1)
        # Only the enterprise ticket: the other has its priority's 4 hours.
        assert await breaches() == [
            (ticket_id(vip.response_id), "first_contact"),
            (ticket_id(vip.response_id), "resolution"),
        ]
