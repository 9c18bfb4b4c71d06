"""ingest: the accepted events themselves, for a bounded time, so what a broker lost can be
published again (`nps ingest replay`, and `nps up` when its in-memory broker starts empty);
and the replay watermark (every event accepted before it has been read by every consumer)

Revision ID: ingest_0003
Revises: ingest_0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0003"
down_revision = "ingest_0002"
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("kind", sa.Text, sa.CheckConstraint("kind IN ('response', 'erasure')"), nullable=False),
        # whose event it is (and its partition key): erasure deletes a person's events here too
        sa.Column("respondent_id", sa.Text, nullable=False),
        sa.Column("event", sa.LargeBinary, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("events_accepted_at", "events", ["accepted_at"], schema=SCHEMA)
    op.create_index("events_respondent", "events", ["respondent_id"], schema=SCHEMA)
    op.create_table(
        "replay_watermark",
        sa.Column("id", sa.Boolean, sa.CheckConstraint("id"), primary_key=True, server_default=sa.true()),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        # the topic's end offsets when it advanced: a topic found below them lost events, and the
        # watermark stays where it is until a replay clears them (NULL)
        sa.Column("ends", sa.dialects.postgresql.JSONB),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("replay_watermark", schema=SCHEMA)
    op.drop_table("events", schema=SCHEMA)
