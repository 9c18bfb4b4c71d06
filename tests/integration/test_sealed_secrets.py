"""Webhook signing secrets sealed at rest (shared/sealed.py): the database holds only sealed values,
which open with NPS_SECRETS_KEY for their own subscription; the migration seals what was kept in
plain text (and refuses without the key); `nps secrets rotate` seals everything again with a new
key; delivery refuses to start without a key."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic import command

from delivery_service import repository, subscriptions
from delivery_service.subscriptions import NewSubscription, SubscriptionPatch
from services.embedded import free_port
from shared.auth import KeyStore, Publishable, hash_api_key, identity_place
from shared.db import SERVICE_SCHEMAS, alembic_config, make_engine
from shared.sealed import CannotOpen, Sealer, new_key
from tests.helpers import TEST_SECRETS_KEY, nps, nps_env

pytestmark = pytest.mark.integration

BODY = NewSubscription.model_validate({"url": "https://desk.example/hooks", "events": ["TicketOpened"]})


async def sealed_row(database_url: str, subscription_id: str) -> tuple[str, str | None]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text("SELECT secret, previous_secret FROM delivery.subscriptions WHERE subscription_id = :id"),
                    {"id": subscription_id},
                )
            ).one()
        return row[0], row[1]
    finally:
        await engine.dispose()


async def test_the_database_holds_only_sealed_secrets_that_open_for_their_own_subscription(database_url: str) -> None:
    sealer = Sealer.of(TEST_SECRETS_KEY)
    engine = make_engine(database_url)
    try:
        made = await subscriptions.create(engine, sealer, BODY, True, "tests")
        other = await subscriptions.create(engine, sealer, BODY, True, "tests")
        rotated = await subscriptions.change(
            engine, sealer, made.subscription_id, SubscriptionPatch(rotate_secret=True, overlap_s=60), True, "tests"
        )
        assert made.secret and rotated.secret and made.secret != rotated.secret
        async with engine.connect() as conn:
            dump = str((await conn.execute(sa.text("SELECT * FROM delivery.subscriptions"))).all())
            assert made.secret not in dump and rotated.secret not in dump and "whsec_" not in dump
            target = await repository.target(conn, sealer, made.subscription_id)
            assert target is not None and target.secrets == (rotated.secret, made.secret)  # the new one first
            # Without the key, or with another, nothing opens: a dump alone cannot sign.
            with pytest.raises(CannotOpen):
                await repository.target(conn, Sealer.of(new_key()), made.subscription_id)
            # A sealed secret copied onto another subscription's row does not open there.
            await conn.execute(
                sa.text(
                    "UPDATE delivery.subscriptions SET secret = (SELECT secret FROM delivery.subscriptions "
                    "WHERE subscription_id = :from) WHERE subscription_id = :to"
                ),
                {"from": made.subscription_id, "to": other.subscription_id},
            )
            with pytest.raises(CannotOpen, match="moved from another row"):
                await repository.target(conn, sealer, other.subscription_id)
    finally:
        await engine.dispose()


async def test_the_migration_seals_plain_secrets_and_refuses_without_the_key(database_url: str) -> None:
    sealer = Sealer.of(TEST_SECRETS_KEY)
    script = SERVICE_SCHEMAS["delivery"]
    await asyncio.to_thread(command.downgrade, alembic_config(script, database_url), "delivery_0002")
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:  # as delivery_0002 kept it: in plain text
            await conn.execute(
                sa.text(
                    "INSERT INTO delivery.subscriptions (subscription_id, url, events, format, status, secret, "
                    "previous_secret, previous_secret_until, created_at, updated_at) VALUES ('wh_plain', "
                    "'https://desk.example/h', '{TicketOpened}', 'standard', 'active', 'whsec_now', 'whsec_before', "
                    "now() + interval '1 hour', now(), now())"
                )
            )
        with pytest.raises(RuntimeError, match="set NPS_SECRETS_KEY"):
            await asyncio.to_thread(command.upgrade, alembic_config(script, database_url), "head")
        assert await sealed_row(database_url, "wh_plain") == ("whsec_now", "whsec_before")  # untouched
        await asyncio.to_thread(command.upgrade, alembic_config(script, database_url, sealer=sealer), "head")
        secret, previous = await sealed_row(database_url, "wh_plain")
        assert "whsec" not in secret and previous is not None and "whsec" not in previous
        async with engine.connect() as conn:
            target = await repository.target(conn, sealer, "wh_plain")
        assert target is not None and target.secrets == ("whsec_now", "whsec_before")
        await asyncio.to_thread(command.downgrade, alembic_config(script, database_url, sealer=sealer), "delivery_0002")
        assert await sealed_row(database_url, "wh_plain") == ("whsec_now", "whsec_before")
        await asyncio.to_thread(command.upgrade, alembic_config(script, database_url, sealer=sealer), "head")
    finally:
        await engine.dispose()


async def test_a_rotation_seals_everything_again_with_the_new_key(database_url: str) -> None:
    old, fresh = TEST_SECRETS_KEY, new_key()
    engine = make_engine(database_url)
    try:
        made = await subscriptions.create(engine, Sealer.of(old), BODY, True, "tests")
        # A publishable key's identity secret is sealed with the same key, and rotates with it.
        page = Publishable(frozenset({"https://app.example.com"}))
        sealed_identity = Sealer.of(old).seal("idsec_page", identity_place("page"))
        await KeyStore(engine).create("page", hash_api_key("nps_pk_x"), (), "tests", page, sealed_identity)
    finally:
        await engine.dispose()
    env = nps_env(DATABASE_URL=database_url, NPS_SECRETS_KEY=fresh)
    refused = await asyncio.to_thread(nps, "secrets", "rotate", env=env)  # the old key not given
    assert refused.returncode == 1 and "nothing changed" in refused.stderr, refused.stderr
    assert Sealer.of(old).is_current((await sealed_row(database_url, made.subscription_id))[0])

    rotated = await asyncio.to_thread(nps, "secrets", "rotate", env={**env, "NPS_SECRETS_KEY_PREVIOUS": old})
    assert rotated.returncode == 0, rotated.stderr
    assert "1 webhook subscription(s), 1 publishable key(s) sealed again" in rotated.stdout, rotated.stdout
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            identity = (await KeyStore.sealed_identities(conn))[0]
    finally:
        await engine.dispose()
    assert identity[0] == "page" and Sealer.of(fresh).open(identity[1], identity_place("page")) == "idsec_page"
    secret, _ = await sealed_row(database_url, made.subscription_id)
    assert Sealer.of(fresh).is_current(secret)
    assert Sealer.of(fresh).open(secret, repository.place(made.subscription_id)) == made.secret
    with pytest.raises(CannotOpen):  # the old key alone no longer opens it
        Sealer.of(old).open(secret, repository.place(made.subscription_id))


def test_delivery_refuses_to_start_without_the_key(database_url: str) -> None:
    env = nps_env(DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", NPS_DELIVERY_PORT=str(free_port()))
    del env["NPS_SECRETS_KEY"]
    started = subprocess.run(
        [sys.executable, "-m", "services", "delivery"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert started.returncode != 0
    assert "NPS_SECRETS_KEY is not set" in started.stderr + started.stdout
