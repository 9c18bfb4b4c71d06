"""followup: routing by policy: a follow-up's kind is the policy's action (any name, not only
referral/education/ticket), and it records the rule and policy version that chose it

Revision ID: followup_0005
Revises: followup_0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0005"
down_revision = "followup_0004"
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    op.drop_constraint("followups_kind_check", "followups", schema=SCHEMA)
    op.create_check_constraint("followups_kind", "followups", "kind ~ '^[a-z][a-z0-9_]{0,39}$'", schema=SCHEMA)
    op.add_column("followups", sa.Column("rule", sa.Text), schema=SCHEMA)
    op.add_column("followups", sa.Column("policy_version", sa.Text), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("followups", "policy_version", schema=SCHEMA)
    op.drop_column("followups", "rule", schema=SCHEMA)
    op.drop_constraint("followups_kind", "followups", schema=SCHEMA)
    op.execute(f"DELETE FROM {SCHEMA}.followups WHERE kind NOT IN ('referral', 'education', 'ticket')")
    op.create_check_constraint(
        "followups_kind_check", "followups", "kind IN ('referral', 'education', 'ticket')", schema=SCHEMA
    )
