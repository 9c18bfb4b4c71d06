"""scoring: versions and erasure on responses, a segment catalog, erasure tombstones, publish state

Revision ID: scoring_0002
Revises: scoring_0001
Create Date: 2026-11-25

- responses keep the state a response converged on (highest version, erased or not) and the
  segments it counts in; the respondent is kept only as a SHA-256 key, the raw attributes go.
- segments: every segment ever counted, by dimension (breakdowns, the cardinality cap).
- erasures: the latest erasure request per respondent key, so a late or redelivered event of an
  erased respondent stays erased.
- segment_state: which segments changed since their last ScoreChanged (at most one per second).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "scoring_0002"
down_revision = "scoring_0001"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.add_column("responses", sa.Column("respondent_key", sa.Text), schema=SCHEMA)
    op.add_column("responses", sa.Column("version", sa.Integer, nullable=False, server_default="1"), schema=SCHEMA)
    op.add_column("responses", sa.Column("first_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("responses", sa.Column("erased", sa.Boolean, nullable=False, server_default="false"), schema=SCHEMA)
    op.add_column(
        "responses",
        sa.Column("segments", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        schema=SCHEMA,
    )
    # What 0001 counted: overall, channel, survey and every attribute.
    op.execute(
        f"""
        UPDATE {SCHEMA}.responses SET
            respondent_key = encode(sha256(convert_to(respondent_id, 'UTF8')), 'hex'),
            first_at = counted_at,
            segments = ARRAY['all']
                || CASE WHEN channel IS NULL THEN '{{}}'::text[] ELSE ARRAY['channel:' || channel] END
                || CASE WHEN survey_id IS NULL THEN '{{}}'::text[] ELSE ARRAY['survey_id:' || survey_id] END
                || ARRAY(SELECT key || ':' || value FROM jsonb_each_text(attributes) ORDER BY key)
        """
    )
    op.alter_column("responses", "respondent_key", nullable=False, schema=SCHEMA)
    op.alter_column("responses", "first_at", nullable=False, schema=SCHEMA)
    op.alter_column("responses", "score", nullable=True, schema=SCHEMA)
    op.alter_column("responses", "day", nullable=True, schema=SCHEMA)
    op.drop_index("responses_respondent", "responses", schema=SCHEMA)
    for column in ("respondent_id", "channel", "survey_id", "attributes"):
        op.drop_column("responses", column, schema=SCHEMA)
    op.create_index("responses_respondent_key", "responses", ["respondent_key"], schema=SCHEMA)

    op.create_table(
        "segments",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("dimension", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("segments_dimension", "segments", ["dimension", "value"], unique=True, schema=SCHEMA)
    op.execute(
        f"""
        INSERT INTO {SCHEMA}.segments (segment, dimension, value)
        SELECT DISTINCT segment, split_part(segment, ':', 1), substr(segment, length(split_part(segment, ':', 1)) + 2)
        FROM {SCHEMA}.daily_counts WHERE segment <> 'all'
        """
    )
    op.create_table(
        "erasures",
        sa.Column("respondent_key", sa.Text, primary_key=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "segment_state",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("pending", sa.Boolean, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index(
        "segment_state_pending", "segment_state", ["segment"], schema=SCHEMA, postgresql_where=sa.text("pending")
    )


def downgrade() -> None:
    op.drop_table("segment_state", schema=SCHEMA)
    op.drop_table("erasures", schema=SCHEMA)
    op.drop_table("segments", schema=SCHEMA)
    op.drop_index("responses_respondent_key", "responses", schema=SCHEMA)
    op.add_column("responses", sa.Column("respondent_id", sa.Text), schema=SCHEMA)
    op.add_column("responses", sa.Column("channel", sa.Text), schema=SCHEMA)
    op.add_column("responses", sa.Column("survey_id", sa.Text), schema=SCHEMA)
    op.add_column(
        "responses",
        sa.Column("attributes", postgresql.JSONB, nullable=False, server_default="{}"),
        schema=SCHEMA,
    )
    # The raw respondent ids are gone by design: a downgrade keeps the keys in their place. The
    # channel, survey and attributes come back from the segments (combinations are dropped).
    op.execute(
        f"""
        UPDATE {SCHEMA}.responses SET
            respondent_id = respondent_key,
            channel = (SELECT substr(s, 9) FROM unnest(segments) s WHERE s LIKE 'channel:%' LIMIT 1),
            survey_id = (SELECT substr(s, 11) FROM unnest(segments) s WHERE s LIKE 'survey\\_id:%' LIMIT 1),
            attributes = coalesce((
                SELECT jsonb_object_agg(split_part(s, ':', 1), substr(s, length(split_part(s, ':', 1)) + 2))
                FROM unnest(segments) s
                WHERE s <> 'all' AND s NOT LIKE 'channel:%' AND s NOT LIKE 'survey\\_id:%'
                  AND s !~ ',[a-z][a-z0-9_]*:'
            ), '{{}}'::jsonb)
        """
    )
    op.execute(f"DELETE FROM {SCHEMA}.responses WHERE erased OR score IS NULL")
    op.alter_column("responses", "respondent_id", nullable=False, schema=SCHEMA)
    op.alter_column("responses", "score", nullable=False, schema=SCHEMA)
    op.alter_column("responses", "day", nullable=False, schema=SCHEMA)
    for column in ("segments", "erased", "first_at", "version", "respondent_key"):
        op.drop_column("responses", column, schema=SCHEMA)
    op.create_index("responses_respondent", "responses", ["respondent_id"], schema=SCHEMA)
