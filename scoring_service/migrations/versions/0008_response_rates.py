"""scoring: response rates. Each invitation (nps.invitations.v1) with its segments and whether a
response answers it; each response's key, survey and time (what matching needs); and the daily
counts of invitations and of the answered ones, per segment, by the day of the invitation

Revision ID: scoring_0008
Revises: scoring_0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "scoring_0008"
down_revision = "scoring_0007"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.create_table(
        "rate_invitations",
        sa.Column("invitation_id", sa.Text, primary_key=True),
        sa.Column("respondent_key", sa.Text, nullable=False),  # the keyed pseudonym, as in `responses`
        sa.Column("survey_id", sa.Text, nullable=False),  # '' for none
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("segments", sa.Text, nullable=False),  # joined by U+001F, as in `responses`
        sa.Column("answered", sa.Boolean, nullable=False, server_default=sa.false()),
        # when ingest took the event (recorded_at): an erasure forgets what was taken before it
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    # a person's invitations to a survey, by time: what matching a response looks up
    op.create_index(
        "rate_invitations_person", "rate_invitations", ["respondent_key", "survey_id", "invited_at"], schema=SCHEMA
    )
    op.create_index("rate_invitations_day", "rate_invitations", ["day"], schema=SCHEMA)
    op.create_table(
        "rate_answers",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("respondent_key", sa.Text, nullable=False),
        sa.Column("survey_id", sa.Text, nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invitation_id", sa.Text),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),  # submitted_at
        schema=SCHEMA,
    )
    op.create_index("rate_answers_person", "rate_answers", ["respondent_key"], schema=SCHEMA)
    op.create_table(
        "rate_daily",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("invited", sa.Integer, nullable=False),
        sa.Column("responded", sa.Integer, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("rate_daily", schema=SCHEMA)
    op.drop_table("rate_answers", schema=SCHEMA)
    op.drop_table("rate_invitations", schema=SCHEMA)
