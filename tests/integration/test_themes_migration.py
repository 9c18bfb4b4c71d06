"""themes_0001 on a database written at the previous head (the theme tables in scoring's schema):
every row moves to the themes schema, the counts still equal a recompute, and the themes consumer
goes on counting on top of them, an erasure requested before the move included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from scoring_service import rebuild
from scoring_service.bootstrap import count_responses
from scoring_service.repository import store
from shared.consumer import Message
from shared.db import SERVICE_SCHEMAS, alembic_config, make_engine
from shared.events import RespondentErased, ResponseRevised
from shared.wire import ResponseWire, decode_response
from tests.helpers import TEST_PSEUDONYM_SECRET, submitted_event
from tests.integration.test_scoring_migrations import blank_database
from themes_service.handlers import ThemeCounts
from themes_service.repository import THEMES
from themes_service.settings import ThemesSettings
from themes_service.taxonomy import load_taxonomy

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
TAXONOMY = load_taxonomy()
# Where the previous head kept the theme tables: scoring's schema.
BEFORE = store("scoring", "theme_responses", "theme_daily", "theme_comments")
TABLES = ("theme_responses", "theme_daily", "theme_comments", "segments", "erasures")


def messages(*events: Any) -> list[Message[ResponseWire]]:
    return [Message(decode_response(e.to_bytes()), "t", 0, i, 0) for i, e in enumerate(events)]


async def count(engine: AsyncEngine, counting: ThemeCounts, *events: Any) -> None:
    settings = ThemesSettings(database_url=str(engine.url), pseudonym_secret=TEST_PSEUDONYM_SECRET)
    handler = count_responses(settings, counting, now=lambda: NOW)
    async with engine.begin() as conn:
        await handler(conn, messages(*events))


async def contents(engine: AsyncEngine, schema: str) -> dict[str, set[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        return {t: set(map(tuple, await conn.execute(sa.text(f"SELECT * FROM {schema}.{t}")))) for t in TABLES}


async def test_themes_0001_moves_every_row_and_counting_goes_on(pg_admin_url: str) -> None:
    url = await blank_database(pg_admin_url)
    scoring = alembic_config(SERVICE_SCHEMAS["scoring"], url, TEST_PSEUDONYM_SECRET)
    themes = alembic_config(SERVICE_SCHEMAS["themes"], url, TEST_PSEUDONYM_SECRET)
    await asyncio.to_thread(command.upgrade, scoring, "head")
    engine = make_engine(url)
    # Written by the themes consumer as the previous head ran it: into scoring's schema.
    await count(
        engine,
        ThemeCounts(TAXONOMY, store=BEFORE),
        submitted_event("a", 2, NOW, 1, "web", "delivery was late again"),
        submitted_event("b", 10, NOW, 1, "email", "great support, fast answers"),
        submitted_event("c", 4, NOW, 2, "web", "too expensive for what it does"),
        submitted_event("d", 8, NOW, 0, "web"),
        RespondentErased(erasure_id="e1", respondent_id="u-c", requested_at=NOW),
    )
    before = await contents(engine, "scoring")
    assert before["theme_comments"] and before["segments"] and before["erasures"] and before["theme_daily"]

    await asyncio.to_thread(command.upgrade, themes, "head")

    assert await contents(engine, "themes") == before
    async with engine.connect() as conn:
        left = await conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'scoring'")
        )
        assert not {r.table_name for r in left} & {"theme_responses", "theme_daily", "theme_comments"}
    assert (await rebuild.check(engine, THEMES)).differences == 0

    # The consumer, now on the themes schema: a revision of a moved response, a new one, and a late
    # answer of the person whose erasure was requested before the move (it must not count).
    late = submitted_event("c2", 1, NOW, 0, "web", "delivery broke")
    late = late.model_copy(update={"respondent_id": "u-c"})
    await count(
        engine,
        ThemeCounts(TAXONOMY),
        ResponseRevised(
            response_id="a",
            respondent_id="u-a",
            version=2,
            score=9,
            comment="fast delivery now",
            channel="web",
            answered_at=NOW,
            attributes={},
            revised_at=NOW,
        ),
        submitted_event("e", 6, NOW, 0, "email", "the price went up"),
        late,
    )
    assert (await rebuild.check(engine, THEMES)).differences == 0
    async with engine.connect() as conn:
        comments = dict((await conn.execute(sa.text("SELECT response_id, comment FROM themes.theme_comments"))).all())
        erased = await conn.scalar(sa.text("SELECT erased FROM themes.theme_responses WHERE response_id = 'c2'"))
    assert comments == {"a": "fast delivery now", "b": "great support, fast answers", "e": "the price went up"}
    assert erased is True

    await engine.dispose()
    await asyncio.to_thread(command.downgrade, themes, "base")  # and back: the tables return to scoring
    engine = make_engine(url)
    async with engine.connect() as conn:
        back = await conn.scalar(sa.text("SELECT count(*) FROM scoring.theme_responses"))
    assert back == 6
    await engine.dispose()


async def test_themes_0001_refuses_a_database_scoring_has_not_migrated(pg_admin_url: str) -> None:
    url = await blank_database(pg_admin_url)
    themes = alembic_config(SERVICE_SCHEMAS["themes"], url, TEST_PSEUDONYM_SECRET)
    with pytest.raises(RuntimeError, match="migrate scoring first"):
        await asyncio.to_thread(command.upgrade, themes, "head")


def test_nps_migrate_applies_scoring_before_themes() -> None:
    order = list(SERVICE_SCHEMAS)
    assert order.index("scoring") < order.index("themes")
