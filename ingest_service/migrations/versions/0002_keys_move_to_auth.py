"""ingest: API keys moved to the auth schema every service reads (auth_0001 copied them)

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def upgrade() -> None:
    op.drop_table("api_keys", schema=SCHEMA)


def downgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
