"""auth: API keys (hashes only) with their scopes, read by every service

Revision ID: auth_0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "auth_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),  # sha256 of the key; the key is never stored
        sa.Column("scopes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    # Keys made before scopes existed were ingest's: they keep what they could do there.
    op.execute(
        f"""
        DO $$ BEGIN
            IF to_regclass('ingest.api_keys') IS NOT NULL THEN
                INSERT INTO {SCHEMA}.api_keys (name, key_hash, scopes, created_at, revoked_at)
                SELECT name, key_hash, ARRAY['responses:write', 'respondents:erase'], created_at, revoked_at
                FROM ingest.api_keys;
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("api_keys", schema=SCHEMA)
