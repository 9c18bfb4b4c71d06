"""scoring: the comments the themes consumer holds, for `nps themes suggest`

- `theme_comments`: the comment of each response's current version (in `theme_responses`), only
  while it is not erased and not blank. Personal data: the themes consumer deletes a row when its
  response is erased, revised to no comment, or its respondent asks for erasure.

Revision ID: scoring_0006
Revises: scoring_0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "scoring_0006"
down_revision = "scoring_0005"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.create_table(
        "theme_comments",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("comment", sa.Text, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("theme_comments", schema=SCHEMA)
