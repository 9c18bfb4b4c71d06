"""Ingest's event log: every accepted event kept, erasure reaching it, the replay watermark following
the consumer groups, and `nps ingest replay` publishing again what a broker lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer

from services.infra import ensure_topics
from shared.db import make_engine
from shared.events import RespondentErased, ResponseRevised, ResponseSubmitted, response_events
from shared.settings import Topics
from tests.helpers import eventually, nps_here, read_topic
from tests.integration.conftest import LiveIngest, live_ingest

pytestmark = pytest.mark.integration

GROUPS = ("replay-g1", "replay-g2")


@pytest.fixture
def logged(pg_admin_url: str, bootstrap: str, tmp_path: Path) -> Iterator[LiveIngest]:
    live = live_ingest(
        pg_admin_url,
        bootstrap,
        tmp_path,
        NPS_INGEST_RATE_LIMIT_PER_S="0",
        NPS_INGEST_REPLAY_GROUPS='["replay-g1", "replay-g2"]',
        NPS_INGEST_REPLAY_INVITATION_GROUPS='["replay-g3"]',
        NPS_INGEST_REPLAY_CHECK_S="0.2",
        NPS_INGEST_REPLAY_MARGIN_S="0",
    )
    yield live
    assert live.process.stop() == 0, live.process.log.read_text()[-3000:]


async def consume_all(bootstrap: str, topic: str, group: str, expect: int) -> None:
    """A consumer group that reads `expect` messages and commits, as scoring and follow-up do."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen = 0
        while seen < expect:
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
            await consumer.commit()
    finally:
        await consumer.stop()


async def logged_events(database_url: str) -> list[tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT kind, respondent_id FROM ingest.events ORDER BY seq"))
            return [(r.kind, r.respondent_id) for r in rows]
    finally:
        await engine.dispose()


async def test_accepted_events_are_logged_erasure_reaches_the_log_and_replay_brings_them_back(
    logged: LiveIngest, bootstrap: str
) -> None:
    run = uuid.uuid4().hex[:8]
    people = [f"{run}-p{i}" for i in range(4)]
    started = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=logged.url, headers=logged.auth, timeout=10) as client:
        for i, person in enumerate(people):
            reply = await client.post(
                "/v1/responses", json={"response_id": f"{run}-r{i}", "respondent_id": person, "score": 2 * i}
            )
            assert reply.status_code == 202, reply.text
        retried = await client.post(
            "/v1/responses", json={"response_id": f"{run}-r0", "respondent_id": people[0], "score": 0}
        )
        assert retried.status_code == 202, retried.text  # a retry: published again, not logged twice
        batch = [{"response_id": f"{run}-b{i}", "respondent_id": people[3], "score": 9} for i in range(3)]
        assert (await client.post("/v1/responses/batch", json={"responses": batch})).status_code == 200
        assert (await client.put(f"/v1/responses/{run}-r1", json={"score": 10})).status_code == 202
        assert (await client.delete(f"/v1/respondents/{people[2]}")).status_code == 202

    # The erased person's response is gone from the log; the erasure itself is kept until consumers read it.
    events = await logged_events(logged.database_url)
    assert events == [
        ("response", people[0]),
        ("response", people[1]),
        ("response", people[3]),
        *[("response", people[3])] * 3,
        ("response", people[1]),  # the revision
        ("erasure", people[2]),
    ]

    # A broker that lost everything: replay into a new topic (another namespace) and read it back.
    lost = Topics(f"t{uuid.uuid4().hex[:10]}")
    await ensure_topics(bootstrap, lost.all(), 3)
    env = {**logged.env, "NPS_TOPIC_NAMESPACE": lost.namespace}
    # Since the loss began, as docs/operations.md says. (Not from the watermark: with this test's margin
    # of 0, a check that reads the topic's end while the first event is logged but not yet appended
    # moves the watermark past it; the product's 60 s margin is what covers publishes in flight.)
    replayed = nps_here("ingest", "replay", "--since", started.isoformat(), env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 8 events" in replayed.stdout
    records = await read_topic(bootstrap, lost.responses, expect=8)
    decoded = [response_events.validate_json(r.value) for r in records]
    assert all(r.key == e.respondent_id.encode() for r, e in zip(records, decoded, strict=True))
    assert sorted(e.response_id for e in decoded if isinstance(e, ResponseSubmitted)) == sorted(
        [f"{run}-r0", f"{run}-r1", f"{run}-r3", *[f"{run}-b{i}" for i in range(3)]]
    )
    assert [(e.response_id, e.version) for e in decoded if isinstance(e, ResponseRevised)] == [(f"{run}-r1", 2)]
    assert [e.respondent_id for e in decoded if isinstance(e, RespondentErased)] == [people[2]]

    # Once both groups have read the topic, and the invitations' group its copy of the erasure, the
    # watermark passes the erasure, which leaves the log.
    await asyncio.gather(
        *(consume_all(bootstrap, logged.topics.responses, g, expect=9) for g in GROUPS),
        consume_all(bootstrap, logged.topics.invitations, "replay-g3", expect=1),
    )

    async def erasure_purged() -> bool:
        return ("erasure", people[2]) not in await logged_events(logged.database_url)

    await eventually(erasure_purged, timeout=15)
    engine = make_engine(logged.database_url)
    async with engine.connect() as conn:
        mark = await conn.scalar(sa.text("SELECT at FROM ingest.replay_watermark"))
    await engine.dispose()
    assert mark is not None and mark > datetime.now(UTC) - timedelta(minutes=1)

    # From the watermark (the default), nothing is left to replay; --since replays what was accepted since.
    again = Topics(f"t{uuid.uuid4().hex[:10]}")
    await ensure_topics(bootstrap, again.all(), 3)
    env = {**logged.env, "NPS_TOPIC_NAMESPACE": again.namespace}
    assert "replayed 0 events" in nps_here("ingest", "replay", env=env).stdout
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert "replayed 7 events" in nps_here("ingest", "replay", "--since", since, env=env).stdout
    naive = nps_here("ingest", "replay", "--since", "2026-11-26T09:00:00", env=env)
    assert naive.returncode == 2 and "time zone" in naive.stderr


async def test_the_watermark_stays_while_the_topic_is_below_what_it_held_until_a_replay(
    logged: LiveIngest, bootstrap: str
) -> None:
    async def mark() -> datetime | None:
        engine = make_engine(logged.database_url)
        try:
            async with engine.connect() as conn:
                return await conn.scalar(sa.text("SELECT at FROM ingest.replay_watermark"))  # type: ignore[no-any-return]
        finally:
            await engine.dispose()

    async def post_and_read(n: int, total: int) -> None:
        async with httpx.AsyncClient(base_url=logged.url, headers=logged.auth, timeout=10) as client:
            for _ in range(n):
                body = {"respondent_id": uuid.uuid4().hex, "score": 7}
                assert (await client.post("/v1/responses", json=body)).status_code == 202
        await asyncio.gather(*(consume_all(bootstrap, logged.topics.responses, g, expect=total) for g in GROUPS))

    await post_and_read(2, 2)
    await eventually(lambda: _is_set(mark), timeout=15)

    # As if the broker lost the topic: it is now below the offsets the watermark last advanced at.
    # A check already past its read of the floor writes its own over it: set it until the watermark
    # task has seen it (it says so, once; its checks run one after another).
    async def frozen_by_the_floor() -> bool:
        engine = make_engine(logged.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        """UPDATE ingest.replay_watermark SET ends = '{"0": 1000000}'
                           WHERE ends IS DISTINCT FROM '{"0": 1000000}'::jsonb"""
                    )
                )
        finally:
            await engine.dispose()
        return f"went back on partitions {logged.topics.responses}[0]" in logged.process.log.read_text()

    await eventually(frozen_by_the_floor, timeout=15, every=0.3)
    frozen = await mark()
    await post_and_read(1, 1)  # the groups read on; the watermark must not follow
    await asyncio.sleep(2)  # ten checks
    assert await mark() == frozen

    replayed = nps_here("ingest", "replay", "--since", datetime.now(UTC).isoformat(), env=logged.env)
    assert replayed.returncode == 0, replayed.stderr

    async def advanced() -> bool:
        now = await mark()
        return now is not None and frozen is not None and now > frozen

    await eventually(advanced, timeout=15)


async def test_the_watermark_waits_for_the_invitations_groups_too(logged: LiveIngest, bootstrap: str) -> None:
    """An invitation the rates group has not read holds the watermark, however far the responses'
    groups read: a broker that lost it meanwhile has it replayed from before it."""

    async def mark() -> datetime | None:
        return await watermark_of(logged.database_url)

    made = nps_here("keys", "create", "mailer", "--scope", "invitations:write,responses:write", env=logged.env)
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    invitation = {
        "invitation_id": f"inv-{uuid.uuid4().hex[:8]}", "respondent_id": "p-1", "survey_id": "q4", "channel": "email",
        "invited_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    async with httpx.AsyncClient(base_url=logged.url, headers=headers, timeout=10) as client:

        async def sent() -> bool:  # ingest reloads its keys every 0.2 s here
            reply = await client.post("/v1/invitations", json={"invitations": [invitation]})
            return reply.status_code == 202

        await eventually(sent, timeout=10, every=0.2)
        posted_at = datetime.now(UTC)
        assert (await client.post("/v1/responses", json={"respondent_id": "p-2", "score": 9})).status_code == 202
    await asyncio.gather(*(consume_all(bootstrap, logged.topics.responses, g, expect=1) for g in GROUPS))
    await asyncio.sleep(2)  # ten checks: every response read, the invitation not
    held = await mark()
    assert held is None or held < posted_at, (held, posted_at)

    await consume_all(bootstrap, logged.topics.invitations, "replay-g3", expect=1)

    async def past_it() -> bool:
        now = await mark()
        return now is not None and now > posted_at

    await eventually(past_it, timeout=15)


async def watermark_of(database_url: str) -> datetime | None:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text("SELECT at FROM ingest.replay_watermark"))  # type: ignore[no-any-return]
    finally:
        await engine.dispose()


async def _is_set(read: Callable[[], Awaitable[datetime | None]]) -> bool:
    return await read() is not None
