"""followup: referral codes on promoters' referral follow-ups, and the sign-ups they brought

Revision ID: followup_0008
Revises: followup_0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0008"
down_revision = "followup_0007"
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    op.add_column("followups", sa.Column("referral_code", sa.Text), schema=SCHEMA)
    op.create_index("followups_referral_code", "followups", ["referral_code"], unique=True, schema=SCHEMA)
    op.create_table(
        "referral_conversions",
        sa.Column("conversion_id", sa.Text, primary_key=True),  # the caller's: a retry records nothing twice
        sa.Column("code", sa.Text, nullable=False, index=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("referral_conversions", schema=SCHEMA)
    op.drop_index("followups_referral_code", "followups", schema=SCHEMA)
    op.drop_column("followups", "referral_code", schema=SCHEMA)
