"""followup: one follow-up per response, one ticket per detractor response, outbox

Revision ID: followup_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from shared.outbox import create_outbox

revision = "followup_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    op.create_table(
        "followups",
        sa.Column("followup_id", sa.Text, primary_key=True),
        sa.Column("response_id", sa.Text, nullable=False, unique=True),
        sa.Column("respondent_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, sa.CheckConstraint("kind IN ('referral', 'education', 'ticket')"), nullable=False),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("channel", sa.Text),
        sa.Column("survey_id", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("followups_respondent", "followups", ["respondent_id"], schema=SCHEMA)
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.Text, primary_key=True),
        sa.Column("response_id", sa.Text, nullable=False, unique=True),
        sa.Column("respondent_id", sa.Text, nullable=False),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    create_outbox(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("tickets", schema=SCHEMA)
    op.drop_table("followups", schema=SCHEMA)
