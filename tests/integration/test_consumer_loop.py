"""The shared consumer loop against the real broker and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.consumer import DeadLetterLimitExceeded, Message
from shared.db import make_engine, sqlstate_of
from shared.service import ConsumerSpec
from shared.settings import ServiceSettings
from tests.helpers import (
    create_topics,
    eventually,
    produce,
    read_topic,
    running_loop,
    service_settings,
    started_producer,
    topic_holding,
)

pytestmark = pytest.mark.integration


class Ping(BaseModel):
    n: int


pings = TypeAdapter(Ping)


class Recorder:
    """A batch handler writing each event to a real table, idempotently (like the services)."""

    def __init__(self, fail_first: int = 0, failure: type[Exception] = RuntimeError, delay: float = 0.0) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.failure = failure
        self.delay = delay
        self.request_ids: dict[int, str | None] = {}

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[Ping]]) -> None:
        self.calls += 1
        self.request_ids.update((m.event.n, m.request_id) for m in batch)
        await conn.execute(
            sa.text("INSERT INTO public.seen (n) SELECT unnest(CAST(:ns AS integer[])) ON CONFLICT DO NOTHING"),
            {"ns": [m.event.n for m in batch]},
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.calls <= self.fail_first:
            fail(self.failure)


def fail(failure: type[Exception]) -> None:
    """A transient database failure (OperationalError) or a handler bug (anything else)."""
    if failure is OperationalError:
        raise OperationalError("SELECT 1", {}, ConnectionResetError("database went away"))
    raise failure("handler bug")


async def seen(database_url: str) -> list[int]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [r.n for r in await conn.execute(sa.text("SELECT n FROM public.seen ORDER BY n"))]
    finally:
        await engine.dispose()


@pytest.fixture
async def ready(database_url: str) -> str:
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE public.seen (n integer PRIMARY KEY)"))
    await engine.dispose()
    return database_url


def spec_for(topic: str, handler: Recorder, group: str = "g") -> ConsumerSpec[Ping]:
    return ConsumerSpec(
        service="test", schema="scoring", topic=topic, group_id=group, decode=pings.validate_json, handler=handler
    )


async def test_a_batch_is_committed_after_the_database_commit(bootstrap: str, ready: str, namespace: str) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(50)])
    async with running_loop(settings, spec_for(topic, Recorder())) as run:
        await eventually(run.committed_at_least(50))
    assert await seen(ready) == list(range(50))


async def test_a_failing_handler_commits_nothing_and_the_batch_comes_back(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(10)])

    with pytest.raises(RuntimeError, match="handler bug"):
        async with running_loop(settings, spec_for(topic, Recorder(fail_first=99))) as run:
            await run.task  # the loop dies with the bug: no retry of non-transient errors
    assert await seen(ready) == []  # the transaction rolled back

    async with running_loop(settings, spec_for(topic, Recorder())) as run:  # same group: redelivered
        await eventually(run.committed_at_least(10))
    assert await seen(ready) == list(range(10))


async def test_transient_database_failures_are_retried_without_losing_or_doubling(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    handler = Recorder(fail_first=2, failure=OperationalError)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(5)])
    async with running_loop(settings, spec_for(topic, handler)) as run:
        await eventually(run.committed_at_least(5))
        assert not run.task.done()
    assert handler.calls >= 3
    assert await seen(ready) == list(range(5))


class Deadlocking(Recorder):
    """On its first batch, meets another transaction in a real deadlock, and is the one PostgreSQL
    aborts (it waits first; the other waits with a longer deadlock_timeout, so never breaks it)."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self.states: list[str | None] = []
        self.other: asyncio.Task[None] | None = None

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[Ping]]) -> None:
        await super().__call__(conn, batch)
        if self.calls > 1:
            return
        await conn.execute(sa.text("UPDATE public.locks SET v = v + 1 WHERE k = 1"))
        holding = asyncio.Event()
        self.other = asyncio.create_task(self._other(holding))
        await holding.wait()
        try:
            await conn.execute(sa.text("UPDATE public.locks SET v = v + 1 WHERE k = 2"))
        except sa.exc.DBAPIError as exc:
            self.states.append(sqlstate_of(exc))
            raise

    async def _other(self, holding: asyncio.Event) -> None:
        engine = make_engine(self.database_url)
        try:
            async with engine.begin() as other:
                await other.execute(sa.text("SET LOCAL deadlock_timeout = '30s'"))
                await other.execute(sa.text("UPDATE public.locks SET v = v + 10 WHERE k = 2"))
                holding.set()
                await asyncio.sleep(0.2)  # the loop's transaction waits for k = 2 first
                await other.execute(sa.text("UPDATE public.locks SET v = v + 10 WHERE k = 1"))
        finally:
            await engine.dispose()


async def test_a_deadlock_aborting_the_batch_s_transaction_is_retried_not_fatal(
    bootstrap: str, ready: str, namespace: str
) -> None:
    engine = make_engine(ready)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE public.locks (k integer PRIMARY KEY, v integer NOT NULL)"))
        await conn.execute(sa.text("INSERT INTO public.locks VALUES (1, 0), (2, 0)"))
    settings = service_settings(bootstrap, ready, namespace)
    handler = Deadlocking(ready)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(5)])
    async with running_loop(settings, spec_for(topic, handler)) as run:
        await eventually(run.committed_at_least(5))
        assert not run.task.done()
    assert handler.other is not None
    await handler.other  # the other transaction went through once the batch's was aborted
    assert handler.states == ["40P01"]  # PostgreSQL broke a real deadlock by aborting the batch's transaction
    assert handler.calls >= 2
    assert await seen(ready) == list(range(5))
    async with engine.connect() as conn:
        locks = {r.k: r.v for r in await conn.execute(sa.text("SELECT k, v FROM public.locks"))}
    await engine.dispose()
    assert locks == {1: 10, 2: 10}  # the aborted batch's update to k = 1 was rolled back


async def test_undecodable_messages_go_to_the_dead_letter_topic_and_the_partition_flows(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    await create_topics(settings)
    topic = settings.topics.responses
    async with started_producer(bootstrap) as producer:
        await produce(
            producer,
            topic,
            [
                (b"k", Ping(n=1).model_dump_json().encode()),
                (b"k", b"{not json"),
                (b"k", json.dumps({"n": "many"}).encode()),
                (b"k", Ping(n=2).model_dump_json().encode()),
            ],
        )
    async with running_loop(settings, spec_for(topic, Recorder())) as run:
        await eventually(run.committed_at_least(4))
    assert await seen(ready) == [1, 2]

    dead = await read_topic(bootstrap, settings.topics.deadletter, expect=2)
    assert sorted(r.value for r in dead) == sorted([b"{not json", json.dumps({"n": "many"}).encode()])
    for record in dead:
        headers = dict(record.headers)
        assert headers["nps-dlq-topic"] == topic.encode()
        assert headers["nps-dlq-service"] == b"test"
        assert headers["nps-dlq-reason"]  # says why
        assert int(headers["nps-dlq-offset"]) in (1, 2)
    reasons = {dict(r.headers)["nps-dlq-offset"]: dict(r.headers)["nps-dlq-reason"].decode() for r in dead}
    assert "n:" in reasons[b"2"]  # names the failing field


async def test_the_request_id_header_reaches_the_handler_the_trace_line_and_the_dead_letter(
    bootstrap: str, ready: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    await create_topics(settings)
    topic = settings.topics.responses
    async with started_producer(bootstrap) as producer:
        sent = [
            await producer.send(topic, key=b"k", value=b'{"n": 1}', headers=[("x-request-id", b"req-one")]),
            await producer.send(topic, key=b"k", value=b'{"n": 2}'),
            await producer.send(topic, key=b"k", value=b"{not json", headers=[("x-request-id", b"req-bad")]),
        ]
        await asyncio.gather(*sent)
    handler = Recorder()
    with caplog.at_level(logging.DEBUG, logger="shared.consumer"):
        async with running_loop(settings, spec_for(topic, handler)) as run:
            await eventually(run.committed_at_least(3))
    assert handler.request_ids == {1: "req-one", 2: None}
    traced = [r for r in caplog.records if r.getMessage().startswith("test applied Ping")]
    assert sorted((getattr(r, "request_id", None) or "") for r in traced) == ["", "req-one"]
    warned = [r for r in caplog.records if r.getMessage().startswith("dead-lettering")]
    assert [getattr(r, "request_id", None) for r in warned] == ["req-bad"]
    [dead] = await read_topic(bootstrap, settings.topics.deadletter, expect=1)
    assert dict(dead.headers)["x-request-id"] == b"req-bad"


async def test_a_flood_of_undecodable_messages_stops_the_loop(bootstrap: str, ready: str, namespace: str) -> None:
    settings = service_settings(bootstrap, ready, namespace, deadletter_max_consecutive=3)
    topic = await topic_holding(settings, [b"garbage"] * 5)
    with pytest.raises(DeadLetterLimitExceeded):
        async with running_loop(settings, spec_for(topic, Recorder())) as run:
            await asyncio.wait_for(run.task, 20)


async def test_stop_finishes_the_batch_in_flight_and_commits_it(bootstrap: str, ready: str, namespace: str) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    handler = Recorder(delay=1.0)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(20)])
    async with running_loop(settings, spec_for(topic, handler)) as run:
        await eventually(lambda: _handler_called(handler))
        run.loop.stop()  # what SIGTERM does, while the handler is mid-batch
        await asyncio.wait_for(run.task, 10)
        assert await run.total_committed() == 20
    assert await seen(ready) == list(range(20))


async def _handler_called(handler: Recorder) -> bool:
    return handler.calls > 0


async def test_a_message_too_large_to_dead_letter_whole_goes_truncated_and_the_partition_flows(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    await create_topics(settings)
    topic = settings.topics.responses
    poison = b"\x00not json" + b"x" * (3 * 1024 * 1024)
    big = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    await big.start()
    try:
        await produce(big, topic, [(b"k", Ping(n=1).model_dump_json().encode()), (b"k", poison)])
        await produce(big, topic, [(b"k", Ping(n=2).model_dump_json().encode())])
    finally:
        await big.stop()
    async with running_loop(settings, spec_for(topic, Recorder())) as run:
        await eventually(run.committed_at_least(3), timeout=20)
    assert await seen(ready) == [1, 2]
    [dead] = await read_topic(bootstrap, settings.topics.deadletter, expect=1)
    headers = dict(dead.headers)
    assert dead.value == poison[: 64 * 1024]
    assert int(headers["nps-dlq-truncated-from"]) == len(poison)
    assert headers["nps-dlq-sha256"] == hashlib.sha256(poison).hexdigest().encode()
    assert headers["nps-dlq-reason"]


async def test_a_consumer_stuck_on_one_batch_reports_not_ready_and_its_lag_grows(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace, consumer_stuck_after_s=1.0)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(5)])
    handler = Recorder(fail_first=10_000, failure=OperationalError)  # the database stays away
    async with running_loop(settings, spec_for(topic, handler)) as run:
        assert await run.loop.healthy()
        await eventually(lambda: _not_healthy(run.loop), timeout=15)
        first = _lag(run.loop.service, topic)
        assert first >= 5, first
        async with started_producer(bootstrap) as producer:
            await produce(producer, topic, [(b"k", Ping(n=i).model_dump_json().encode()) for i in range(5, 25)])
        await eventually(lambda: _lag_at_least(run.loop.service, topic, first + 20), timeout=20)
        assert await run.total_committed() == 0


async def _not_healthy(loop: Any) -> bool:
    return not await loop.healthy()


def _lag(service: str, topic: str) -> float:
    return REGISTRY.get_sample_value("nps_consumer_lag", {"service": service, "topic": topic}) or 0.0


async def _lag_at_least(service: str, topic: str, n: float) -> bool:
    return _lag(service, topic) >= n


class ShardRecorder(Recorder):
    """Records how many transactions were in the handler at once, and which parities each saw."""

    def __init__(self, fail_shard: int | None = None, fail_times: int = 0, failure: type[Exception] = OperationalError):
        super().__init__(delay=0.2)
        self.inside = self.most_inside = 0
        self.parities: list[set[int]] = []
        self.fail_shard, self.fail_times, self.failure_kind = fail_shard, fail_times, failure

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[Ping]]) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            parities = {m.event.n % 2 for m in batch}
            self.parities.append(parities)
            await super().__call__(conn, batch)
            if self.fail_times and parities == {self.fail_shard}:
                self.fail_times -= 1
                fail(self.failure_kind)
        finally:
            self.inside -= 1


def sharded(topic: str, handler: Recorder) -> ConsumerSpec[Ping]:
    return ConsumerSpec(
        service="test", schema="scoring", topic=topic, group_id="g", decode=pings.validate_json, handler=handler,
        shard=lambda ping: ping.n, shards=2,
    )  # fmt: skip


async def test_a_sharded_batch_is_one_transaction_per_shard_at_once_each_retried_alone(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    handler = ShardRecorder(fail_shard=1, fail_times=2)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(40)])
    async with running_loop(settings, sharded(topic, handler)) as run:
        await eventually(run.committed_at_least(40))
        assert not run.task.done()
    assert await seen(ready) == list(range(40))
    assert all(len(p) == 1 for p in handler.parities)  # a transaction holds one shard's events only
    assert handler.most_inside == 2  # both shards' transactions were open at once
    assert handler.parities.count({1}) >= handler.parities.count({0}) + 2  # shard 1 alone was retried


async def test_a_shard_that_fails_for_good_fails_the_batch_and_its_redelivery_applies_it_once(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(20)])
    with pytest.raises(RuntimeError, match="handler bug"):
        async with running_loop(settings, sharded(topic, ShardRecorder(1, 99, RuntimeError))) as run:
            await run.task
    assert set(await seen(ready)) <= set(range(0, 20, 2))  # at most the other shard's events are in
    async with running_loop(settings, sharded(topic, ShardRecorder())) as run:  # the offsets were not committed
        await eventually(run.committed_at_least(20))
    assert await seen(ready) == list(range(20))


class Timeline:
    """When each batch and each tick ran (loop time), and how many messages had been decoded and
    applied when each tick ended."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, float]] = []
        self.ticks: list[tuple[float, float]] = []
        self.decoded = self.applied = 0
        self.at_tick_end: list[tuple[int, int]] = []  # (decoded, applied)

    def decode(self, raw: bytes) -> Ping:
        self.decoded += 1
        return pings.validate_json(raw)

    async def handler(self, conn: AsyncConnection, batch: Sequence[Message[Ping]]) -> None:
        await self._timed(self.batches, conn, [m.event.n for m in batch])
        self.applied += len(batch)

    async def tick(self, conn: AsyncConnection) -> None:
        await self._timed(self.ticks, conn, [])
        self.at_tick_end.append((self.decoded, self.applied))

    async def _timed(self, spans: list[tuple[float, float]], conn: AsyncConnection, ns: list[int]) -> None:
        start = asyncio.get_running_loop().time()
        await conn.execute(
            sa.text("INSERT INTO public.seen (n) SELECT unnest(CAST(:ns AS integer[])) ON CONFLICT DO NOTHING"),
            {"ns": ns},
        )
        await asyncio.sleep(0.3)
        spans.append((start, asyncio.get_running_loop().time()))


async def test_a_tick_runs_between_batches_while_the_loop_fetches_and_decodes_the_next(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace, consumer_max_batch=5)
    timeline = Timeline()
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(60)])
    spec = ConsumerSpec(
        service="test", schema="scoring", topic=topic, group_id="g", decode=timeline.decode,
        handler=timeline.handler, tick=timeline.tick, tick_s=0.1,
    )  # fmt: skip
    async with running_loop(settings, spec) as run:
        await eventually(run.committed_at_least(60))
    assert await seen(ready) == list(range(60))
    assert len(timeline.ticks) >= 3
    for tick_start, tick_end in timeline.ticks:  # never beside a batch's transaction
        assert all(end <= tick_start or start >= tick_end for start, end in timeline.batches)
    # While the batch before a tick and the tick ran, the loop fetched and decoded the next batch:
    # when a tick ends (with messages still to come) more have been decoded than applied.
    ahead = [decoded > applied for decoded, applied in timeline.at_tick_end if applied < 60]
    assert len(ahead) >= 2 and all(ahead)


class Order(Recorder):
    """A Recorder that also keeps the order in which events were applied."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.applied: list[int] = []

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[Ping]]) -> None:
        await super().__call__(conn, batch)
        self.applied += [m.event.n for m in batch]


async def two_topics_holding(settings: ServiceSettings, lead: int, others: int) -> tuple[str, str]:
    """`lead` pings (0, 1, ...) on the invitations topic and `others` (from 100,000) on the
    responses topic, spread over the partitions; returns the two topics. Each carries 4 KB more
    (ignored by the decoder): the consumer fetches at most 1 MB of a partition at a time, so it
    reads a topic of them in several fetches, as it does a real backlog."""
    await create_topics(settings)
    async with started_producer(settings.require_bootstrap()) as producer:
        for topic, ns in (
            (settings.topics.invitations, range(lead)),
            (settings.topics.responses, range(100_000, 100_000 + others)),
        ):
            values = [json.dumps({"n": n, "pad": "x" * 4_000}).encode() for n in ns]
            await produce(producer, topic, [(str(n % 7).encode(), v) for n, v in zip(ns, values, strict=True)])
    return settings.topics.invitations, settings.topics.responses


def lead_spec(lead: str, other: str, handler: Recorder, hold_s: float | None) -> ConsumerSpec[Ping]:
    return ConsumerSpec(
        service="test", schema="scoring", topic=lead, more_topics=(other,), group_id="g",
        decode=pings.validate_json, handler=handler, lead_topic=lead if hold_s is not None else None,
        lead_hold_s=hold_s or 0.0,
    )  # fmt: skip


async def test_a_lead_topic_behind_is_read_before_the_others(bootstrap: str, ready: str, namespace: str) -> None:
    settings = service_settings(bootstrap, ready, namespace, consumer_max_batch=100)
    lead, other = await two_topics_holding(settings, lead=1_500, others=1_500)
    order = Order()
    async with running_loop(settings, lead_spec(lead, other, order, hold_s=30)) as run:
        await eventually(run.committed_at_least(3_000))
        # The others are resumed once the lead has caught up: a ping on them now comes through.
        async with started_producer(settings.require_bootstrap()) as producer:
            await produce(producer, other, [(b"k", Ping(n=200_000).model_dump_json().encode())])
        await eventually(run.committed_at_least(3_001))
    assert sorted(order.applied) == await seen(ready)  # every one, once
    last_lead = max(i for i, n in enumerate(order.applied) if n < 100_000)
    # Only the first poll, before any high watermark was known, may read the other topic.
    assert sum(1 for n in order.applied[:last_lead] if n >= 100_000) <= 100


async def test_without_a_lead_both_topics_are_read_together(bootstrap: str, ready: str, namespace: str) -> None:
    """The control of the test above: the order it checks is the lead's doing."""
    settings = service_settings(bootstrap, ready, namespace, consumer_max_batch=100)
    lead, other = await two_topics_holding(settings, lead=1_500, others=1_500)
    order = Order()
    async with running_loop(settings, lead_spec(lead, other, order, hold_s=None)) as run:
        await eventually(run.committed_at_least(3_000))
    last_lead = max(i for i, n in enumerate(order.applied) if n < 100_000)
    assert sum(1 for n in order.applied[:last_lead] if n >= 100_000) > 100


async def test_a_lead_that_stays_behind_past_its_hold_lets_the_others_through(
    bootstrap: str, ready: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, ready, namespace, consumer_max_batch=50)
    lead, other = await two_topics_holding(settings, lead=1_500, others=300)
    order = Order(delay=0.05)  # ~1.5 s for the lead alone, 30 batches
    async with running_loop(settings, lead_spec(lead, other, order, hold_s=0.3)) as run:
        await eventually(run.committed_at_least(1_800))
    last_lead = max(i for i, n in enumerate(order.applied) if n < 100_000)
    assert sum(1 for n in order.applied[:last_lead] if n >= 100_000) > 50  # read beside it after 0.3 s


class Sizes(Recorder):
    """A Recorder that keeps each batch's size and tells when its first batch began."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.sizes: list[int] = []
        self.began = asyncio.Event()

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[Ping]]) -> None:
        self.sizes.append(len(batch))
        self.began.set()
        await super().__call__(conn, batch)


async def test_what_arrives_while_a_batch_applies_is_the_next_batch_whole(
    bootstrap: str, ready: str, namespace: str
) -> None:
    """A trickle: one transaction for everything that came while the one before was applied, not a
    transaction per poll (before the loop gathered, it waited out the first batch after an empty
    poll, then took the 40 as [21, 19])."""
    settings = service_settings(bootstrap, ready, namespace)
    topic = await topic_holding(settings, [Ping(n=0).model_dump_json().encode()])
    sizes = Sizes(delay=4.0)  # the 40 sends, each waiting for its ack, took ~0.5 s here
    async with running_loop(settings, spec_for(topic, sizes)) as run, started_producer(bootstrap) as producer:
        await asyncio.wait_for(sizes.began.wait(), 15)
        for n in range(1, 41):  # one at a time, as POSTs arrive, while the first batch applies
            await produce(producer, topic, [(b"k", Ping(n=n).model_dump_json().encode())])
            await asyncio.sleep(0.01)
        await eventually(run.committed_at_least(41))
    assert sizes.sizes == [1, 40]
    assert await seen(ready) == list(range(41))


async def test_a_partition_whose_log_ends_before_the_position_is_read_again_from_its_beginning(
    bootstrap: str, ready: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The state a broker that lost its log leaves a consumer in (the embedded broker restarted
    empty, the launcher replaying into it): the position past the partition's end. The embedded
    broker answers such a fetch with nothing, where Apache Kafka says OFFSET_OUT_OF_RANGE: without
    the loop's check the consumer waited at its old position and never read what arrived below it."""
    settings = service_settings(bootstrap, ready, namespace)
    topic = await topic_holding(settings, [Ping(n=i).model_dump_json().encode() for i in range(20)])
    caplog.set_level(logging.WARNING, logger="shared.consumer")
    async with running_loop(settings, spec_for(topic, Recorder())) as run:
        await eventually(run.committed_at_least(20))
        [tp] = [tp for tp, offset in (await run.committed()).items() if offset == 20]  # one key: one partition
        run.consumer.seek(tp, 1_000)  # as if the partition had held 1,000 events before the broker lost them
        async with started_producer(bootstrap) as producer:
            await produce(producer, topic, [(b"k", Ping(n=i).model_dump_json().encode()) for i in range(20, 25)])

        async def all_read() -> bool:
            return await seen(ready) == list(range(25))

        await eventually(all_read, timeout=20)
    assert any("reading it again from its beginning" in r.getMessage() for r in caplog.records)
