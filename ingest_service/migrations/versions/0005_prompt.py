"""ingest: what GET /v1/prompt reads besides ingest's own responses and invitations. Each person's
latest contact preference (follow-up's opt-outs, mirrored from nps.contact.v1), the erasures ingest
was asked for (by keyed pseudonym: never the person's id), and the outbox of the consumer loop that
mirrors the preferences (it publishes nothing, but every consumer loop has one)

Revision ID: ingest_0005
Revises: ingest_0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from shared.outbox import create_outbox, pack_outbox

revision = "ingest_0005"
down_revision = "ingest_0004"
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def upgrade() -> None:
    op.create_table(
        "contact",
        sa.Column("respondent_key", sa.Text, primary_key=True),
        sa.Column("opted_out", sa.Boolean, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),  # the latest change wins
        schema=SCHEMA,
    )
    op.create_table(
        "erasures",
        sa.Column("respondent_key", sa.Text, primary_key=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    create_outbox(op, SCHEMA)
    pack_outbox(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("erasures", schema=SCHEMA)
    op.drop_table("contact", schema=SCHEMA)
