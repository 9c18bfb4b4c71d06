"""Scoring's migrations on data written by older code: nothing counted is lost, the personal data
goes, respondent keys become keyed hashes, and the aggregates still equal a recompute."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command

from scoring_service import rebuild, repository
from shared.db import SERVICE_SCHEMAS, alembic_config, make_engine, upgrade
from shared.pseudonyms import Pseudonyms
from tests.helpers import TEST_PSEUDONYM_SECRET, with_database

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 20)


async def blank_database(pg_admin_url: str) -> str:
    name = f"m_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(with_database(pg_admin_url, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(pg_admin_url, name)


async def test_0002_keeps_every_count_and_drops_the_raw_ids(pg_admin_url: str) -> None:
    url = await blank_database(pg_admin_url)
    config = alembic_config(SERVICE_SCHEMAS["scoring"], url, TEST_PSEUDONYM_SECRET)
    await asyncio.to_thread(command.upgrade, config, "scoring_0001")
    engine = make_engine(url)
    rows = [
        ("r1", "alice", 10, "web", None, {"product": "atlas"}),
        ("r2", "bob", 3, None, "q4", {}),
        ("r3", "alice", 8, "email", None, {"product": "zephyr", "region": "eu"}),
    ]
    async with engine.begin() as conn:
        for rid, who, score, channel, survey, attributes in rows:
            await conn.execute(
                sa.text(
                    "INSERT INTO scoring.responses (response_id, respondent_id, score, day, channel, survey_id, "
                    "attributes) VALUES (:r, :w, :s, :d, :c, :q, CAST(:a AS jsonb))"
                ),
                {"r": rid, "w": who, "s": score, "d": DAY, "c": channel, "q": survey, "a": json.dumps(attributes)},
            )
        # what 0001's handler had counted for them
        for segment, p, pa, d in [
            ("all", 1, 1, 1),
            ("channel:web", 1, 0, 0),
            ("channel:email", 0, 1, 0),
            ("survey_id:q4", 0, 0, 1),
            ("product:atlas", 1, 0, 0),
            ("product:zephyr", 0, 1, 0),
            ("region:eu", 0, 1, 0),
        ]:
            await conn.execute(
                sa.text("INSERT INTO scoring.daily_counts VALUES (:s, :d, :p, :pa, :de)"),
                {"s": segment, "d": DAY, "p": p, "pa": pa, "de": d},
            )

    await asyncio.to_thread(command.upgrade, config, "head")
    async with engine.connect() as conn:
        migrated = {
            r.response_id: r
            for r in await conn.execute(sa.text("SELECT * FROM scoring.responses ORDER BY response_id"))
        }
        columns = set(migrated["r1"]._mapping)
        catalog = {
            (r.dimension, r.value) for r in await conn.execute(sa.text("SELECT dimension, value FROM scoring.segments"))
        }
    assert "respondent_id" not in columns and "attributes" not in columns
    assert migrated["r1"].respondent_key == Pseudonyms(TEST_PSEUDONYM_SECRET).key("alice")
    assert migrated["r3"].segments.split("\x1f") == ["all", "channel:email", "product:zephyr", "region:eu"]
    assert (migrated["r2"].version, migrated["r2"].erased) == (1, False)
    assert ("product", "zephyr") in catalog and ("survey_id", "q4") in catalog
    report = await rebuild.check(engine)
    assert report.differences == 0, report.describe()

    # And back down (the raw ids are gone by design; the counts survive).
    await asyncio.to_thread(command.downgrade, config, "scoring_0001")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert (await rebuild.check(engine)).differences == 0
    await engine.dispose()


async def test_0007_stores_each_response_s_segments_as_one_string_and_back(pg_admin_url: str) -> None:
    """Arrays (none at all too) become strings joined by U+001F, the counts still equal a recompute
    from them, the service's reader gets the segments back; downgraded, the arrays return."""
    url = await blank_database(pg_admin_url)
    config = alembic_config(SERVICE_SCHEMAS["scoring"], url, TEST_PSEUDONYM_SECRET)
    await asyncio.to_thread(command.upgrade, config, "scoring_0006")
    engine = make_engine(url)
    arrays = {"s1": ["all", "channel:web", 'plan:"pro", {x}'], "s2": ["all"], "s3": []}
    async with engine.begin() as conn:
        for table, prefix in (("responses", ""), ("theme_responses", "all@")):
            for rid, segments in arrays.items():
                await conn.execute(
                    sa.text(
                        f"INSERT INTO scoring.{table} (response_id, respondent_key, version, first_at, erased, score, "
                        "day, segments) VALUES (:r, 'k', 1, now(), :e, 9, :d, CAST(:s AS text[]))"
                    ),
                    {"r": rid, "e": not segments, "d": DAY, "s": [prefix + s for s in segments]},
                )
    await asyncio.to_thread(command.upgrade, config, "head")
    async with engine.begin() as conn:
        for table, prefix in (("responses", ""), ("theme_responses", "all@")):
            stored = dict((await conn.execute(sa.text(f"SELECT response_id, segments FROM scoring.{table}"))).all())
            assert stored == {rid: "\x1f".join(prefix + s for s in segments) for rid, segments in arrays.items()}
        read = await repository.lock_responses(conn, list(arrays), [])
        assert {rid: list(row.segments) for rid, row in read.items()} == arrays
    assert (await rebuild.from_responses(engine)).daily_rows == 3  # all, channel:web, plan:... on one day
    assert (await rebuild.check(engine)).differences == 0
    await engine.dispose()  # its connections' prepared statements know the column's old type
    await asyncio.to_thread(command.downgrade, config, "scoring_0006")
    engine = make_engine(url)
    async with engine.connect() as conn:
        back = dict((await conn.execute(sa.text("SELECT response_id, segments FROM scoring.responses"))).all())
    assert back == arrays
    await engine.dispose()


async def test_0003_turns_stored_keys_into_keyed_ones_in_scoring_and_followup(pg_admin_url: str) -> None:
    url = await blank_database(pg_admin_url)
    at_0002 = {"scoring": "scoring_0002", "followup": "followup_0002"}
    for service, revision in at_0002.items():
        await asyncio.to_thread(command.upgrade, alembic_config(SERVICE_SCHEMAS[service], url), revision)
    unkeyed = "encode(sha256(convert_to(:who, 'UTF8')), 'hex')"
    engine = make_engine(url)
    async with engine.begin() as conn:
        for rid, who in [("r1", "alice@example.com"), ("r2", "bob@example.com")]:
            await conn.execute(
                sa.text(
                    "INSERT INTO scoring.responses (response_id, respondent_key, version, first_at, score, day, "
                    f"segments) VALUES (:r, {unkeyed}, 1, now(), 9, :d, ARRAY['all'])"
                ),
                {"r": rid, "who": who, "d": DAY},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO followup.followups (followup_id, response_id, respondent_id, respondent_key, "
                    f"submitted_at, kind, score, created_at) VALUES (:r, :r, :who, {unkeyed}, now(), 'referral', 9, "
                    "now())"
                ),
                {"r": rid, "who": who},
            )
        for schema in at_0002:
            await conn.execute(
                sa.text(f"INSERT INTO {schema}.erasures VALUES ({unkeyed}, now())"), {"who": "carol@example.com"}
            )

    # Without the secret, stored keys cannot be converted: the migration stops and says why.
    with pytest.raises(RuntimeError, match="NPS_PSEUDONYM_SECRET"):
        await asyncio.to_thread(command.upgrade, alembic_config(SERVICE_SCHEMAS["scoring"], url), "head")

    await asyncio.to_thread(upgrade, url, ["scoring", "followup"], TEST_PSEUDONYM_SECRET)
    pseudonyms = Pseudonyms(TEST_PSEUDONYM_SECRET)
    async with engine.connect() as conn:
        for schema, table in [("scoring", "responses"), ("followup", "followups")]:
            keys = {
                r.response_id: r.respondent_key
                for r in await conn.execute(sa.text(f"SELECT response_id, respondent_key FROM {schema}.{table}"))
            }
            assert keys == {"r1": pseudonyms.key("alice@example.com"), "r2": pseudonyms.key("bob@example.com")}
            erased = [r[0] for r in await conn.execute(sa.text(f"SELECT respondent_key FROM {schema}.erasures"))]
            assert erased == [pseudonyms.key("carol@example.com")]
    await engine.dispose()
