"""followup: contact rules: a follow-up can be `suppressed` (reason, and when it would have been
allowed), and people can opt out of follow-up messages

Revision ID: followup_0007
Revises: followup_0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0007"
down_revision = "followup_0006"
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    op.drop_constraint("followups_status", "followups", schema=SCHEMA)
    op.create_check_constraint(
        "followups_status", "followups", "status IN ('created', 'failed', 'suppressed')", schema=SCHEMA
    )
    op.add_column("followups", sa.Column("eligible_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    # The contact rules read a person's recent messages.
    op.create_index("followups_contacts", "followups", ["respondent_key", "created_at"], schema=SCHEMA)
    op.create_table(
        "opt_outs",
        sa.Column("respondent_key", sa.Text, primary_key=True),  # the keyed hash, never the id
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("opt_outs", schema=SCHEMA)
    op.drop_index("followups_contacts", "followups", schema=SCHEMA)
    op.drop_column("followups", "eligible_at", schema=SCHEMA)
    op.execute(f"DELETE FROM {SCHEMA}.followups WHERE status = 'suppressed'")
    op.drop_constraint("followups_status", "followups", schema=SCHEMA)
    op.create_check_constraint("followups_status", "followups", "status IN ('created', 'failed')", schema=SCHEMA)
