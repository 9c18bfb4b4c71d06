"""alerts: a batch's outbox events packed into one row per topic (the `frames` column; the value
compressed, so PostgreSQL stores it as it is): see shared/outbox.py.

Revision ID: alerts_0002
Revises: alerts_0001
Create Date: 2026-11-26
"""

from alembic import op

from shared.outbox import pack_outbox, unpack_outbox

revision = "alerts_0002"
down_revision = "alerts_0001"
branch_labels = None
depends_on = None

SCHEMA = "alerts"


def upgrade() -> None:
    pack_outbox(op, SCHEMA)


def downgrade() -> None:
    unpack_outbox(op, SCHEMA)
