"""followup: a ticket keeps its policy rule's own SLA (seconds to first contact and to resolution;
null: its priority's, NPS_FOLLOWUP_SLA), so a rule such as "enterprise detractors: first contact
within 2 hours" holds for the tickets it opened even after the policy or the settings change.

Revision ID: followup_0011
Revises: followup_0010
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0011"
down_revision = "followup_0010"
branch_labels = None
depends_on = None

SCHEMA = "followup"
COLUMNS = ("first_contact_sla_s", "resolution_sla_s")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("tickets", sa.Column(column, sa.Float, nullable=True), schema=SCHEMA)


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_column("tickets", column, schema=SCHEMA)
