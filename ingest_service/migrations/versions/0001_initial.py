"""ingest: API keys (hashes only), and what ingest must remember of each response

Revision ID: ingest_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),  # sha256 of the key; the key is never stored
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    # One row per response_id: the idempotency record (fingerprint of the first body), the partition
    # key and immutable fields a revision needs, and the revision counter. No comment, no email.
    op.create_table(
        "responses",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("respondent_id", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("channel", sa.Text),
        sa.Column("survey_id", sa.Text),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("responses_respondent", "responses", ["respondent_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("responses", schema=SCHEMA)
    op.drop_table("api_keys", schema=SCHEMA)
