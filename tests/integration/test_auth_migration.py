"""auth_0001 takes over the API keys ingest kept before scopes existed: they keep working, with
what they could do then, and ingest's own table goes (ingest_0002)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command

from shared.auth import KeyStore, hash_api_key
from shared.db import SERVICE_SCHEMAS, alembic_config, make_engine, upgrade
from tests.integration.test_scoring_migrations import blank_database

pytestmark = pytest.mark.integration


async def test_keys_made_before_scopes_keep_working_with_what_they_could_do(pg_admin_url: str) -> None:
    url = await blank_database(pg_admin_url)
    await asyncio.to_thread(command.upgrade, alembic_config(SERVICE_SCHEMAS["ingest"], url), "ingest_0001")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO ingest.api_keys (name, key_hash) VALUES ('app', :h), ('old', :o)"),
                {"h": hash_api_key("nps_app"), "o": hash_api_key("nps_old")},
            )
            await conn.execute(sa.text("UPDATE ingest.api_keys SET revoked_at = now() WHERE name = 'old'"))
        await asyncio.to_thread(upgrade, url)  # auth first, then every service to head
        keys = await KeyStore(engine).active()
        assert set(keys) == {hash_api_key("nps_app")}  # the revoked one stays revoked
        app = keys[hash_api_key("nps_app")]
        assert app.name == "app" and app.scopes == {"responses:write", "respondents:erase"}
        assert app.allows("responses:write") and not app.allows("scores:read")
        async with engine.connect() as conn:
            left = await conn.execute(sa.text("SELECT to_regclass('ingest.api_keys')"))
            assert left.scalar_one() is None
    finally:
        await engine.dispose()
