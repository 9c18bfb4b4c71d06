"""scoring: responses (one row per response_id), daily counts per segment, outbox

Revision ID: scoring_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.outbox import create_outbox

revision = "scoring_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("respondent_id", sa.Text, nullable=False),
        sa.Column("score", sa.SmallInteger, sa.CheckConstraint("score BETWEEN 0 AND 10"), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("channel", sa.Text),
        sa.Column("survey_id", sa.Text),
        sa.Column("attributes", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("counted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("responses_respondent", "responses", ["respondent_id"], schema=SCHEMA)
    op.create_table(
        "daily_counts",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("promoters", sa.Integer, nullable=False),
        sa.Column("passives", sa.Integer, nullable=False),
        sa.Column("detractors", sa.Integer, nullable=False),
        schema=SCHEMA,
    )
    create_outbox(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("daily_counts", schema=SCHEMA)
    op.drop_table("responses", schema=SCHEMA)
