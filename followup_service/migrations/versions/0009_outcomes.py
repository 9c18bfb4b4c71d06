"""followup: outcomes: when a person answers again, the move from their previous answer's category
and the follow-up that answer got

Revision ID: followup_0009
Revises: followup_0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0009"
down_revision = "followup_0008"
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    op.create_table(
        "transitions",
        sa.Column("response_id", sa.Text, primary_key=True),  # the new answer
        sa.Column("respondent_key", sa.Text, nullable=False),  # the keyed hash: erasure removes their rows
        sa.Column("previous_response_id", sa.Text, nullable=False),
        sa.Column("previous_category", sa.Text, nullable=False),
        sa.Column("new_category", sa.Text, nullable=False),
        sa.Column("days_between", sa.Float, nullable=False),
        sa.Column("followup_kind", sa.Text, nullable=False),  # what the previous answer got
        sa.Column("followup_status", sa.Text, nullable=False),
        sa.Column("ticket_resolved_before", sa.Boolean),  # null: the previous answer had no ticket
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.Text),
        sa.Column("survey_id", sa.Text),
        schema=SCHEMA,
    )
    op.create_index("transitions_answered", "transitions", ["answered_at"], schema=SCHEMA)
    op.create_index("transitions_respondent", "transitions", ["respondent_key"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("transitions", schema=SCHEMA)
