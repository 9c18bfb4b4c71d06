"""scoring: respondent keys become keyed hashes (HMAC under NPS_PSEUDONYM_SECRET) instead of a
plain SHA-256 of the id, which anyone can recompute for a guessable id

Revision ID: scoring_0003
Revises: scoring_0002
Create Date: 2026-11-26
"""

from alembic import context, op

from shared.privacy import rekey_columns

revision = "scoring_0003"
down_revision = "scoring_0002"
branch_labels = None
depends_on = None

SCHEMA = "scoring"
COLUMNS = [(f"{SCHEMA}.responses", "respondent_key"), (f"{SCHEMA}.erasures", "respondent_key")]


def upgrade() -> None:
    rekey_columns(op.get_bind(), context.config.attributes.get("pseudonyms"), COLUMNS)


def downgrade() -> None:
    # Irreversible: the ids are gone (0002), so keys stay keyed. Code from before this revision
    # would derive unkeyed keys, and its erasures would miss the responses stored until now.
    pass
