"""followup: tickets get a lifecycle (status machine, version for optimistic concurrency,
priority, assignee, resolution, first contact and resolution times) and a history of changes;
a respondent has at most one active ticket (older active duplicates are closed as `merged`), and
a follow-up knows its ticket and the response version it was routed on

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
        sa.Column("respondent_key", sa.Text),
        # when each SLA deadline was found missed (TicketSlaBreached is published once per deadline)
        sa.Column("first_contact_breached_at", sa.DateTime(timezone=True)),
        sa.Column("resolution_breached_at", sa.DateTime(timezone=True)),
    ):
        op.add_column("tickets", column, schema=SCHEMA)
    op.add_column("followups", sa.Column("ticket_id", sa.Text), schema=SCHEMA)
    op.add_column("followups", sa.Column("version", sa.Integer, nullable=False, server_default="1"), schema=SCHEMA)
    op.execute(
        f"UPDATE {SCHEMA}.followups f SET ticket_id = t.ticket_id FROM {SCHEMA}.tickets t "
        "WHERE t.response_id = f.response_id"
    )
    op.execute(
        f"""
        UPDATE {SCHEMA}.tickets t SET updated_at = t.created_at, channel = f.channel, survey_id = f.survey_id,
            respondent_key = f.respondent_key
        FROM {SCHEMA}.followups f WHERE f.response_id = t.response_id
        """
    )
    # One active ticket per respondent from now on: of several open ones, the newest stays.
    op.execute(
        f"""
        UPDATE {SCHEMA}.tickets t SET status = 'closed', resolution = 'merged', version = t.version + 1
        WHERE t.status = 'open' AND EXISTS (
            SELECT 1 FROM {SCHEMA}.tickets n WHERE n.respondent_key = t.respondent_key AND n.status = 'open'
              AND (n.created_at, n.ticket_id) > (t.created_at, t.ticket_id))
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
    # A revision into detractor opens another ticket for the same response: no longer one per response.
    op.drop_constraint("tickets_response_id_key", "tickets", schema=SCHEMA)
    op.create_index("tickets_response", "tickets", ["response_id"], schema=SCHEMA)
    op.create_index(
        "tickets_one_active_per_respondent",
        "tickets",
        ["respondent_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('open', 'in_progress', 'contacted')"),
    )
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
    op.drop_index("tickets_one_active_per_respondent", "tickets", schema=SCHEMA)
    op.drop_index("tickets_response", "tickets", schema=SCHEMA)
    op.create_unique_constraint("tickets_response_id_key", "tickets", ["response_id"], schema=SCHEMA)
    op.drop_index("tickets_status", "tickets", schema=SCHEMA)
    op.drop_index("tickets_created", "tickets", schema=SCHEMA)
    op.drop_constraint("tickets_priority", "tickets", schema=SCHEMA)
    op.drop_constraint("tickets_status", "tickets", schema=SCHEMA)
    op.drop_column("followups", "version", schema=SCHEMA)
    op.drop_column("followups", "ticket_id", schema=SCHEMA)
    for column in (
        "resolution_breached_at",
        "first_contact_breached_at",
        "respondent_key",
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
