"""auth: a publishable key's prompt sample (`nps keys create --sample 0.25`): the share of people
GET /v1/prompt shows the prompt to, the same people all through a period

Revision ID: auth_0004
Revises: auth_0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0004"
down_revision = "auth_0003"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("sample", sa.Float, sa.CheckConstraint("sample > 0 AND sample <= 1", name="api_keys_sample")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("api_keys", "sample", schema=SCHEMA)
