"""alerts: each segment's response-rate days (`rate_days`), mirrored from ScoreChanged.rates for the
response_rate rule: invitations and the answered ones for every day from `first_day` on (the
invitation's day), one element a day, as `days` holds the counts. A row is what the segment's
newest ScoreChanged said (`computed_at`): each carries every day a rule reads.

Revision ID: alerts_0005
Revises: alerts_0004
Create Date: 2026-12-07
"""

from alembic import op

revision = "alerts_0005"
down_revision = "alerts_0004"
branch_labels = None
depends_on = None

SCHEMA = "alerts"


def upgrade() -> None:
    op.execute(
        f"""CREATE TABLE {SCHEMA}.rate_days (
                segment text PRIMARY KEY,
                first_day date NOT NULL,
                invited integer[] NOT NULL,
                responded integer[] NOT NULL,
                computed_at timestamptz NOT NULL,
                CONSTRAINT rate_days_one_length CHECK (cardinality(invited) = cardinality(responded))
            )"""
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE {SCHEMA}.rate_days")
