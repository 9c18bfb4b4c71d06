"""shared/db.copy_rows, the bulk insert every hot path uses: in the caller's transaction (even as
its first statement), in the rows' order, with the INSERT's conflict and RETURNING clauses, and
with SQLAlchemy's errors."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from aiokafka.partitioner import murmur2
from alembic import command
from sqlalchemy.exc import IntegrityError

from scoring_service import repository
from scoring_service.domain import Stored
from shared.consumer import RetryBatch
from shared.db import SERVICE_SCHEMAS, alembic_config, copy_rows, fetch, make_engine, split_list
from shared.outbox import OutboxRelay, Outgoing, drop_keys, enqueue, unpack
from tests.helpers import TEST_PSEUDONYM_SECRET, create_topics, read_topic, service_settings, started_producer

pytestmark = pytest.mark.integration


async def test_rows_land_in_order_inside_the_transaction_and_leave_with_a_rollback(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        items = [Outgoing(f"topic-{i % 3}", f"k{i}".encode(), f"v{i}".encode()) for i in range(2_000)]
        async with engine.begin() as conn:
            await enqueue(conn, "followup", items)  # the transaction's first statement
            await enqueue(conn, "followup", items[:5])  # the staging table again, same transaction
        async with engine.connect() as conn:
            rows = (
                await conn.execute(sa.text("SELECT topic, key, value, frames FROM followup.outbox ORDER BY id"))
            ).all()
        stored = [
            item
            for r in rows
            for item in (unpack(r.topic, r.value) if r.frames else [Outgoing(r.topic, r.key, bytes(r.value))])
        ]
        for topic in {i.topic for i in items}:  # per topic, the order they were enqueued in
            assert [i for i in stored if i.topic == topic] == [i for i in items + items[:5] if i.topic == topic]

        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await enqueue(conn, "followup", items[:10])
                raise RuntimeError("the handler failed after writing")
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM followup.outbox")) == len(rows)
    finally:
        await engine.dispose()


async def test_conflicts_returning_and_errors_are_the_insert_s(database_url: str) -> None:
    engine = make_engine(database_url)
    columns = ("conversion_id", "code", "converted_at")
    try:
        async with engine.begin() as conn:
            now = await conn.scalar(sa.text("SELECT now()"))
            first = await copy_rows(
                conn, "followup.referral_conversions", columns, [("c1", "r1", now), ("c2", "r1", now)],
                "ON CONFLICT (conversion_id) DO NOTHING RETURNING conversion_id",
            )  # fmt: skip
            again = await copy_rows(
                conn, "followup.referral_conversions", columns, [("c2", "r1", now), ("c3", "r2", now)],
                "ON CONFLICT (conversion_id) DO NOTHING RETURNING conversion_id",
            )  # fmt: skip
        assert [r["conversion_id"] for r in first] == ["c1", "c2"]
        assert [r["conversion_id"] for r in again] == ["c3"]
        with pytest.raises(IntegrityError) as refused:
            async with engine.begin() as conn:
                await copy_rows(conn, "followup.referral_conversions", columns, [("c1", "r1", now)])
        assert refused.value.orig is not None and getattr(refused.value.orig, "sqlstate", None) == "23505"
    finally:
        await engine.dispose()


async def test_scoring_s_rows_go_straight_in_and_a_row_written_meanwhile_retries_the_batch(
    database_url: str,
) -> None:
    """insert_responses: segments (any text, none at all) are stored as one string joined by U+001F
    and read back as they were; a response another transaction wrote meanwhile makes the batch
    RetryBatch; any other refusal stays an error."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            now = await conn.scalar(sa.text("SELECT now()"))
            day = now.date()
            rows = [
                Stored("j1", "k", 1, now, score=9, day=day, segments=("all", "plan:pro", 'région:é,"{x}"')),
                Stored("j2", "k", 1, now, erased=True),  # no segments: an empty string
                Stored("j3", "k", 2, now, score=5, day=day, segments=("all",)),
            ]
            await repository.insert_responses(conn, rows)
            stored = {
                r.response_id: r.segments
                for r in await conn.execute(
                    sa.text("SELECT response_id, segments FROM scoring.responses WHERE response_id LIKE 'j_'")
                )
            }
            read = await repository.lock_responses(conn, ["j1", "j2", "j3"], [])
        assert stored == {"j1": 'all\x1fplan:pro\x1frégion:é,"{x}"', "j2": "", "j3": "all"}
        assert {rid: row.segments for rid, row in read.items()} == {
            "j1": ("all", "plan:pro", 'région:é,"{x}"'),
            "j2": (),
            "j3": ("all",),
        }
        with pytest.raises(RetryBatch):
            async with engine.begin() as conn:
                await repository.insert_responses(conn, [Stored("j4", "k", 1, now), rows[0]])
        with pytest.raises(IntegrityError) as refused:  # a NULL version: a bug, not a race
            async with engine.begin() as conn:
                await repository.insert_responses(conn, [Stored("j5", "k", None, now)])  # type: ignore[arg-type]
        assert getattr(refused.value.orig, "sqlstate", None) == "23502"
        async with engine.connect() as conn:
            left = await conn.scalar(sa.text("SELECT count(*) FROM scoring.responses WHERE response_id LIKE 'j_'"))
        assert left == 3  # the refused batches wrote nothing
    finally:
        await engine.dispose()


async def test_the_relay_keeps_each_key_s_order_on_the_partition_the_producer_would_pick(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, database_url, namespace)
    await create_topics(settings)
    topic = settings.topics.tickets
    # 3,000 rows, 40 keys, values large enough to fill many record batches per partition.
    items = [Outgoing(topic, f"key-{i % 40}".encode(), f"{i:06d}".encode() + b"x" * 600) for i in range(3_000)]
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "followup", items)
        async with started_producer(bootstrap) as producer:
            assert await OutboxRelay(engine, producer, "followup").flush() == len(items)
            expected = sorted(await producer.partitions_for(topic))
        records = await read_topic(bootstrap, topic, expect=len(items))
    finally:
        await engine.dispose()
    assert len(records) == len(items)
    by_key: dict[bytes, list[tuple[int, bytes]]] = {}
    for record in records:
        assert record.key is not None
        by_key.setdefault(record.key, []).append((record.partition, record.value[:6]))
    for key, seen in by_key.items():
        # Java's partitioner (what producer.send uses): murmur2 of the key, positive, modulo the count.
        assert {p for p, _ in seen} == {expected[(murmur2(key) & 0x7FFFFFFF) % len(expected)]}
        assert [v for _, v in seen] == sorted(v for _, v in seen)  # in the order they were enqueued


async def test_packed_events_keep_their_order_and_erasure_reaches_inside_them(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = service_settings(bootstrap, database_url, namespace)
    await create_topics(settings)
    tickets, followups = settings.topics.tickets, settings.topics.followups
    items = [
        Outgoing(tickets if i % 2 else followups, f"person-{i % 5}".encode(), f"{i:04d}".encode()) for i in range(60)
    ]
    single = [Outgoing(tickets, b"person-1", b"single")]
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "followup", items)  # packed: one row per topic
            await enqueue(conn, "followup", single)  # fewer than PACK_AT: a row of its own
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT topic, key, frames FROM followup.outbox ORDER BY id"))).all()
        assert [(r.topic, r.key, r.frames) for r in rows] == [
            (followups, None, 30),
            (tickets, None, 30),
            (tickets, b"person-1", None),
        ]
        async with engine.begin() as conn:  # person-1 is erased before anything went out
            assert await drop_keys(conn, "followup", [b"person-1"]) == 12 + 1
        async with started_producer(bootstrap) as producer:
            assert await OutboxRelay(engine, producer, "followup").flush() == 60 - 12
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM followup.outbox")) == 0
    finally:
        await engine.dispose()
    for topic in (tickets, followups):
        records = await read_topic(bootstrap, topic, expect=24)
        sent = [(r.key, r.value) for r in records]
        expected = [(i.key, i.value) for i in items if i.topic == topic and i.key != b"person-1"]
        assert sorted(sent) == sorted(expected)
        for key in {k for k, _ in expected}:  # each key's events in the order they were enqueued
            assert [v for k, v in sent if k == key] == [v for k, v in expected if k == key]


async def test_a_downgrade_turns_packed_rows_back_into_one_row_per_event(database_url: str) -> None:
    items = [Outgoing("nps.tickets.v1", f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await enqueue(conn, "followup", items)
        config = alembic_config(SERVICE_SCHEMAS["followup"], database_url, TEST_PSEUDONYM_SECRET)
        await asyncio.to_thread(command.downgrade, config, "followup_0011")
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT topic, key, value FROM followup.outbox ORDER BY id"))).all()
        assert [Outgoing(r.topic, bytes(r.key), bytes(r.value)) for r in rows] == items
        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        await engine.dispose()


async def test_a_split_list_round_trips_any_strings(database_url: str) -> None:
    # Separators inside values (another is chosen), the old literal's delimiters, empty, non-ASCII.
    awkward = ['a"b', "c\\d", "\x1f", "x\x1ey\x1d", "\x1c", "{x,y}", " pad ", "NULL", "", "ünï 😀", "p,q"]
    plain = [f"k{i}" for i in range(1_000)]
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            for values in (awkward, plain, ["only"], []):
                got = await fetch(conn, "SELECT unnest(string_to_array($1, $2))", *split_list(values))
                assert [r[0] for r in got] == values
                # And as SQLAlchemy's parameters, the way shared.privacy passes them.
                joined, sep = split_list(values)
                count = sa.text("SELECT cardinality(string_to_array(:v, :sep))")
                assert await conn.scalar(count, {"v": joined, "sep": sep}) == len(values)
            # A lone empty string comes back twice: the same to `= ANY`.
            got = await fetch(conn, "SELECT unnest(string_to_array($1, $2))", *split_list([""]))
            assert [r[0] for r in got] == ["", ""]
    finally:
        await engine.dispose()
