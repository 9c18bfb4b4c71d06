"""followup: a follow-up's rendered message lives only in its FollowUpCreated event (the outbox row,
then the topic), no longer also in followup.followups: half the bytes written per follow-up, and
one copy less of text that can quote a comment. The template and locale stay on the row.

The indexes change with the lookups a batch makes: a person's answers by respondent key then
submitted_at (their latest answer, index-only backwards; their recent messages, by key) replaces
both the respondent-key index and the contact-rules one (key then created_at); the referral-code
index keeps only the rows that have a code; the primary key is the response id (one follow-up per
response; the follow-up id, never looked up, changes when a revision re-routes it).

Revision ID: followup_0010
Revises: followup_0009
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "followup_0010"
down_revision = "followup_0009"
branch_labels = None
depends_on = None

SCHEMA = "followup"
COLUMNS = ("subject", "body_text", "body_html")


def upgrade() -> None:
    for column in COLUMNS:
        op.drop_column("followups", column, schema=SCHEMA)
    op.drop_index("followups_respondent_key", "followups", schema=SCHEMA)
    op.drop_index("followups_contacts", "followups", schema=SCHEMA)
    op.drop_constraint("followups_pkey", "followups", schema=SCHEMA)
    op.drop_constraint("followups_response_id_key", "followups", schema=SCHEMA)
    op.create_primary_key("followups_pkey", "followups", ["response_id"], schema=SCHEMA)
    op.create_index("followups_answers", "followups", ["respondent_key", "submitted_at"], schema=SCHEMA)
    op.drop_index("followups_referral_code", "followups", schema=SCHEMA)
    op.create_index(
        "followups_referral_code",
        "followups",
        ["referral_code"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("referral_code IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("followups_referral_code", "followups", schema=SCHEMA)
    op.create_index("followups_referral_code", "followups", ["referral_code"], unique=True, schema=SCHEMA)
    op.create_index("followups_respondent_key", "followups", ["respondent_key"], schema=SCHEMA)
    op.drop_index("followups_answers", "followups", schema=SCHEMA)
    op.drop_constraint("followups_pkey", "followups", schema=SCHEMA)
    op.create_primary_key("followups_pkey", "followups", ["followup_id"], schema=SCHEMA)
    op.create_unique_constraint("followups_response_id_key", "followups", ["response_id"], schema=SCHEMA)
    op.create_index("followups_contacts", "followups", ["respondent_key", "created_at"], schema=SCHEMA)
    for column in COLUMNS:
        op.add_column("followups", sa.Column(column, sa.Text, nullable=True), schema=SCHEMA)
