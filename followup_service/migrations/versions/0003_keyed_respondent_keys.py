"""followup: respondent keys become keyed hashes (HMAC under NPS_PSEUDONYM_SECRET) instead of a
plain SHA-256 of the id, which anyone can recompute for a guessable id

Revision ID: followup_0003
Revises: followup_0002
Create Date: 2026-11-26
"""

from alembic import context, op

from shared.privacy import rekey_columns

revision = "followup_0003"
down_revision = "followup_0002"
branch_labels = None
depends_on = None

SCHEMA = "followup"
COLUMNS = [(f"{SCHEMA}.followups", "respondent_key"), (f"{SCHEMA}.erasures", "respondent_key")]


def upgrade() -> None:
    rekey_columns(op.get_bind(), context.config.attributes.get("pseudonyms"), COLUMNS)


def downgrade() -> None:
    # A keyed hash cannot be turned back into the plain SHA-256 without the ids: the follow-ups
    # still hold theirs; remembered erasures are kept as they are (they match nothing older).
    op.execute(
        f"UPDATE {SCHEMA}.followups SET respondent_key = encode(sha256(convert_to(respondent_id, 'UTF8')), 'hex') "
        "WHERE respondent_id IS NOT NULL"
    )
