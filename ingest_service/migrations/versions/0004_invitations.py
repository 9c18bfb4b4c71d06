"""ingest: who was asked. One row per invitation_id (an invitation a server posted, or a prompt a
widget showed: its impression_id), for the prompt's "asked recently" and for idempotency; their
events are logged for replay like responses (kind 'invitation', published to nps.invitations.v1)

Revision ID: ingest_0004
Revises: ingest_0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0004"
down_revision = "ingest_0003"
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("invitation_id", sa.Text, primary_key=True),
        sa.Column("respondent_id", sa.Text, nullable=False),  # erasure deletes a person's rows
        sa.Column("survey_id", sa.Text),
        sa.Column("how", sa.Text, sa.CheckConstraint("how IN ('invited', 'shown', 'dismissed')"), nullable=False),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),  # of the first body: a reused id with another is refused
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("invitations_respondent", "invitations", ["respondent_id", "changed_at"], schema=SCHEMA)
    op.execute(f"ALTER TABLE {SCHEMA}.events DROP CONSTRAINT IF EXISTS events_kind_check")
    op.execute(
        f"ALTER TABLE {SCHEMA}.events ADD CONSTRAINT events_kind_check CHECK (kind IN ('response', 'erasure', 'invitation'))"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM {SCHEMA}.events WHERE kind = 'invitation'")
    op.execute(f"ALTER TABLE {SCHEMA}.events DROP CONSTRAINT IF EXISTS events_kind_check")
    op.execute(f"ALTER TABLE {SCHEMA}.events ADD CONSTRAINT events_kind_check CHECK (kind IN ('response', 'erasure'))")
    op.drop_table("invitations", schema=SCHEMA)
