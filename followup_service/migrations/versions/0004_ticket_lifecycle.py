"""followup: tickets get a lifecycle (status machine, version for optimistic concurrency,
priority, assignee, resolution, first contact and resolution times) and a history of changes

Revision ID: followup_0004
Revises: followup_0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0004"
down_revision = "followup_0003"
branch_labels = None
depends_on = None

SCHEMA = "followup"
STATUSES = "('open', 'in_progress', 'contacted', 'resolved', 'closed')"


def upgrade() -> None:
    for column in (
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("priority", sa.Text, nullable=False, server_default="normal"),
        sa.Column("assignee", sa.Text),
        sa.Column("resolution", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("first_contact_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("channel", sa.Text),
        sa.Column("survey_id", sa.Text),
    ):
        op.add_column("tickets", column, schema=SCHEMA)
    op.execute(
        f"""
        UPDATE {SCHEMA}.tickets t SET updated_at = t.created_at, channel = f.channel, survey_id = f.survey_id
        FROM {SCHEMA}.followups f WHERE f.response_id = t.response_id
        """
    )
    op.execute(f"UPDATE {SCHEMA}.tickets SET updated_at = created_at WHERE updated_at IS NULL")
    op.alter_column("tickets", "updated_at", nullable=False, schema=SCHEMA)
    op.create_check_constraint("tickets_status", "tickets", f"status IN {STATUSES}", schema=SCHEMA)
    op.create_check_constraint(
        "tickets_priority", "tickets", "priority IN ('low', 'normal', 'high', 'urgent')", schema=SCHEMA
    )
    # The list's order and its cursor: newest first.
    op.create_index(
        "tickets_created", "tickets", [sa.text("created_at DESC"), sa.text("ticket_id DESC")], schema=SCHEMA
    )
    op.create_index("tickets_status", "tickets", ["status"], schema=SCHEMA)
    op.create_table(
        "ticket_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("ticket_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),  # the API key's name
        sa.Column("status_from", sa.Text),
        sa.Column("status_to", sa.Text),
        sa.Column("assignee", sa.Text),
        sa.Column("resolution", sa.Text),
        sa.Column("note", sa.Text),  # free text about a person: cleared by erasure
        sa.UniqueConstraint("ticket_id", "version"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("ticket_history", schema=SCHEMA)
    op.drop_index("tickets_status", "tickets", schema=SCHEMA)
    op.drop_index("tickets_created", "tickets", schema=SCHEMA)
    op.drop_constraint("tickets_priority", "tickets", schema=SCHEMA)
    op.drop_constraint("tickets_status", "tickets", schema=SCHEMA)
    for column in (
        "survey_id",
        "channel",
        "resolved_at",
        "first_contact_at",
        "updated_at",
        "resolution",
        "assignee",
        "priority",
        "version",
    ):
        op.drop_column("tickets", column, schema=SCHEMA)
