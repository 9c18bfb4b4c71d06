"""alerts: state per segment, alert history, outbox

Revision ID: alerts_0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from shared.outbox import create_outbox

revision = "alerts_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "alerts"


def upgrade() -> None:
    op.create_table(
        "segment_states",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("firing", sa.Boolean, nullable=False),
        sa.Column("alert_id", sa.Text),
        sa.Column("last_computed_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.Text, primary_key=True),
        sa.Column("segment", sa.Text, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("current_nps", sa.Float, nullable=False),
        sa.Column("baseline_nps", sa.Float, nullable=False),
        sa.Column("current_n", sa.Integer, nullable=False),
        sa.Column("baseline_n", sa.Integer, nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index("alerts_fired_at", "alerts", ["fired_at"], schema=SCHEMA)
    create_outbox(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("alerts", schema=SCHEMA)
    op.drop_table("segment_states", schema=SCHEMA)
