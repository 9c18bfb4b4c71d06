"""scoring: each stored response's segments as one string, joined by U+001F, instead of `text[]`

The consumers write each batch's new responses by a binary COPY: as `text[]`, asyncpg checked
every element and PostgreSQL parsed every array (10,000 rows of six segments: 27-42 ms of the
consumer's CPU and 32-47 ms of the COPY, against 8-16 and 14-20 ms as one string). Segment values
never hold the separator (scoring_service/domain.py replaces it); no segments is ''. Readers
split it (`string_to_array(segments, chr(31))` in SQL).

The type change rewrites `responses` and `theme_responses` under an exclusive lock (seconds per
million rows; the query API does not read these tables). Stop scoring and the themes consumer for
it, as `nps up` and the deploy's migration job do: a consumer of the version before writes arrays.

Revision ID: scoring_0007
Revises: scoring_0006
Create Date: 2026-11-27
"""

from alembic import op

revision = "scoring_0007"
down_revision = "scoring_0006"
branch_labels = None
depends_on = None

SCHEMA = "scoring"
TABLES = ("responses", "theme_responses")


def upgrade() -> None:
    for table in TABLES:
        op.execute(
            f"""ALTER TABLE {SCHEMA}.{table}
                    ALTER COLUMN segments DROP DEFAULT,
                    ALTER COLUMN segments TYPE text USING array_to_string(segments, chr(31)),
                    ALTER COLUMN segments SET DEFAULT ''"""
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(
            f"""ALTER TABLE {SCHEMA}.{table}
                    ALTER COLUMN segments DROP DEFAULT,
                    ALTER COLUMN segments TYPE text[]
                        USING CASE WHEN segments = '' THEN '{{}}'::text[] ELSE string_to_array(segments, chr(31)) END,
                    ALTER COLUMN segments SET DEFAULT '{{}}'"""
        )
