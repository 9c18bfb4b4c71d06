"""scoring: which segments' response rates changed since their last ScoreChanged. The rates
consumer marks them here, not in `segment_state`: the two consumers never wait on each other's
rows (every batch of either touches the `all` segment).

Revision ID: scoring_0009
Revises: scoring_0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "scoring_0009"
down_revision = "scoring_0008"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.create_table(
        "rate_state",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("pending", sa.Boolean, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    # every segment with response rates goes out once with them
    op.execute(
        f"""INSERT INTO {SCHEMA}.rate_state (segment, pending)
            SELECT DISTINCT segment, true FROM {SCHEMA}.rate_daily"""
    )


def downgrade() -> None:
    op.drop_table("rate_state", schema=SCHEMA)
