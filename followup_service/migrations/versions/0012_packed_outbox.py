"""followup: a batch's outbox events packed into one row per topic (the `frames` column; the value
compressed, so PostgreSQL stores it as it is): see shared/outbox.py.

Revision ID: followup_0012
Revises: followup_0011
Create Date: 2026-11-26
"""

from alembic import op

from shared.outbox import pack_outbox, unpack_outbox

revision = "followup_0012"
down_revision = "followup_0011"
branch_labels = None
depends_on = None

SCHEMA = "followup"


def upgrade() -> None:
    pack_outbox(op, SCHEMA)


def downgrade() -> None:
    unpack_outbox(op, SCHEMA)
