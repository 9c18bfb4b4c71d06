"""followup: the message each follow-up carries (rendered from the policy's templates: subject,
text and HTML bodies, locale, template) and its status (`created`, or `failed` with the reason)

Revision ID: followup_0006
Revises: followup_0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0006"
down_revision = "followup_0005"
branch_labels = None
depends_on = None

SCHEMA = "followup"
COLUMNS = ("status", "reason", "template", "locale", "subject", "body_text", "body_html")


def upgrade() -> None:
    op.add_column(
        "followups",
        sa.Column(
            "status",
            sa.Text,
            sa.CheckConstraint("status IN ('created', 'failed')", name="followups_status"),
            nullable=False,
            server_default="created",
        ),
        schema=SCHEMA,
    )
    for name in COLUMNS[1:]:
        op.add_column("followups", sa.Column(name, sa.Text), schema=SCHEMA)


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column("followups", name, schema=SCHEMA)
