"""followup: erasure. Follow-ups know their respondent by key and submission time, personal data
can be cleared, and erasure requests are remembered (to apply to events that arrive later)

Revision ID: followup_0002
Revises: followup_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0002"
down_revision = "followup_0001"
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    op.add_column("followups", sa.Column("respondent_key", sa.Text), schema=SCHEMA)
    op.add_column("followups", sa.Column("submitted_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    # shared/privacy.py's respondent_key, in SQL; rows from before knew only when they were routed.
    op.execute(
        f"""
        UPDATE {SCHEMA}.followups SET
            respondent_key = encode(sha256(convert_to(respondent_id, 'UTF8')), 'hex'),
            submitted_at = created_at
        """
    )
    op.alter_column("followups", "respondent_key", nullable=False, schema=SCHEMA)
    op.alter_column("followups", "submitted_at", nullable=False, schema=SCHEMA)
    op.alter_column("followups", "respondent_id", nullable=True, schema=SCHEMA)
    op.alter_column("tickets", "respondent_id", nullable=True, schema=SCHEMA)
    op.drop_index("followups_respondent", "followups", schema=SCHEMA)
    op.create_index("followups_respondent_key", "followups", ["respondent_key"], schema=SCHEMA)
    op.create_table(
        "erasures",
        sa.Column("respondent_key", sa.Text, primary_key=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("erasures", schema=SCHEMA)
    op.drop_index("followups_respondent_key", "followups", schema=SCHEMA)
    op.execute(f"DELETE FROM {SCHEMA}.tickets WHERE respondent_id IS NULL")  # erased: 0001 cannot hold them
    op.execute(f"DELETE FROM {SCHEMA}.followups WHERE respondent_id IS NULL")
    op.alter_column("tickets", "respondent_id", nullable=False, schema=SCHEMA)
    op.alter_column("followups", "respondent_id", nullable=False, schema=SCHEMA)
    op.create_index("followups_respondent", "followups", ["respondent_id"], schema=SCHEMA)
    op.drop_column("followups", "submitted_at", schema=SCHEMA)
    op.drop_column("followups", "respondent_key", schema=SCHEMA)
