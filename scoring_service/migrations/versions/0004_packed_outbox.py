"""scoring: a batch's outbox events packed into one row per topic (the `frames` column; the value
compressed, so PostgreSQL stores it as it is): see shared/outbox.py.

Revision ID: scoring_0004
Revises: scoring_0003
Create Date: 2026-11-26
"""

from alembic import op

from shared.outbox import pack_outbox, unpack_outbox

revision = "scoring_0004"
down_revision = "scoring_0003"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    pack_outbox(op, SCHEMA)


def downgrade() -> None:
    unpack_outbox(op, SCHEMA)
