"""delivery: webhook subscriptions, the delivery queue and its attempts, erasure requests

Revision ID: delivery_0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from shared.outbox import create_outbox, pack_outbox

revision = "delivery_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "delivery"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.Text, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("events", ARRAY(sa.Text), nullable=False),
        sa.Column("kinds", ARRAY(sa.Text)),
        sa.Column("segments", ARRAY(sa.Text)),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text),
        sa.Column("previous_secret_until", TS),
        sa.Column("failing_since", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("format IN ('standard', 'slack')", name="subscriptions_format"),
        sa.CheckConstraint("status IN ('active', 'paused', 'disabled')", name="subscriptions_status"),
        schema=SCHEMA,
    )
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.Text, primary_key=True),  # the webhook-id
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),  # the order events were consumed in
        sa.Column(
            "subscription_id",
            sa.Text,
            sa.ForeignKey(f"{SCHEMA}.subscriptions.subscription_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event_type", sa.Text, nullable=False),
        # What an endpoint receives in order: the subscription and one ticket, alert or follow-up.
        sa.Column("lane", sa.Text, nullable=False),
        sa.Column("respondent_key", sa.Text),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("payload", sa.LargeBinary),  # the event as on its topic; null once erased
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("last_latency_ms", sa.Float),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')", name="deliveries_status"),
        schema=SCHEMA,
    )
    pending = sa.text("status = 'pending'")
    op.create_index(
        "deliveries_due", "deliveries", ["subscription_id", "next_attempt_at"], schema=SCHEMA, postgresql_where=pending
    )
    op.create_index(
        "deliveries_lane", "deliveries", ["lane", "seq"], schema=SCHEMA,
        postgresql_where=pending,
    )  # fmt: skip
    op.create_index("deliveries_by_subscription", "deliveries", ["subscription_id", "seq"], schema=SCHEMA)
    op.create_index(
        "deliveries_respondent", "deliveries", ["respondent_key"], schema=SCHEMA,
        postgresql_where=sa.text("respondent_key IS NOT NULL"),
    )  # fmt: skip
    op.create_index("deliveries_finished", "deliveries", ["finished_at"], schema=SCHEMA)
    op.create_table(
        "attempts",
        sa.Column(
            "delivery_id",
            sa.Text,
            sa.ForeignKey(f"{SCHEMA}.deliveries.delivery_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("latency_ms", sa.Float, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "erasures",
        sa.Column("respondent_key", sa.Text, primary_key=True),
        sa.Column("requested_at", TS, nullable=False),
        schema=SCHEMA,
    )
    create_outbox(op, SCHEMA)
    pack_outbox(op, SCHEMA)


def downgrade() -> None:
    for table in ("outbox", "erasures", "attempts", "deliveries", "subscriptions"):
        op.drop_table(table, schema=SCHEMA)
