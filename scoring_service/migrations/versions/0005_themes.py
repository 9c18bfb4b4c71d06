"""scoring: themes, counted by their own consumer (`nps scoring themes`, group nps-scoring-themes)

- `theme_responses`: each response's state as the themes consumer holds it (the same rule as
  `responses`: highest version, erasure), its `segments` being theme keys `<theme>@<segment>`,
  with `_all@<segment>` (every response) and `_commented@<segment>` (those with a comment).
- `theme_daily`: counts per (theme key, day), promoters / passives / detractors, like `daily_counts`.

Revision ID: scoring_0005
Revises: scoring_0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "scoring_0005"
down_revision = "scoring_0004"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.create_table(
        "theme_responses",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("respondent_key", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased", sa.Boolean, nullable=False),
        sa.Column("score", sa.SmallInteger),
        sa.Column("day", sa.Date),
        sa.Column("segments", postgresql.ARRAY(sa.Text), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("theme_responses_respondent_key", "theme_responses", ["respondent_key"], schema=SCHEMA)
    op.create_table(
        "theme_daily",
        sa.Column("segment", sa.Text, primary_key=True),  # <theme>@<segment>
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("promoters", sa.Integer, nullable=False),
        sa.Column("passives", sa.Integer, nullable=False),
        sa.Column("detractors", sa.Integer, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("theme_daily", schema=SCHEMA)
    op.drop_table("theme_responses", schema=SCHEMA)
