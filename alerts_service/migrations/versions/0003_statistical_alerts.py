"""alerts: statistical rules and a state machine per (rule, segment)

- `daily`: alerts' own copy of each segment's daily counts (from ScoreChanged.daily), so rounds
  can judge any window without asking scoring, also when traffic stops.
- `arrivals`: what arrived per segment per 5 minutes (the change between two ScoreChanged), for
  the incident rule.
- `segments` (was `segment_states`): per segment, the newest ScoreChanged judged and its last
  arrival; the firing flag moves to `rule_states`.
- `alerts`: one row per alert of any rule, with its explanation (JSON), acknowledgement and
  silence; the drop columns of the old rule move into `explanation`.
- `silences`: matchers that keep alerts from being published until they end.

Revision ID: alerts_0003
Revises: alerts_0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "alerts_0003"
down_revision = "alerts_0002"
branch_labels = None
depends_on = None

SCHEMA = "alerts"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "daily",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("promoters", sa.Integer, nullable=False),
        sa.Column("passives", sa.Integer, nullable=False),
        sa.Column("detractors", sa.Integer, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "arrivals",
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("bucket", TS, primary_key=True),
        sa.Column("promoters", sa.Integer, nullable=False),
        sa.Column("passives", sa.Integer, nullable=False),
        sa.Column("detractors", sa.Integer, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("arrivals_bucket", "arrivals", ["bucket"], schema=SCHEMA)
    op.rename_table("segment_states", "segments", schema=SCHEMA)
    op.drop_column("segments", "firing", schema=SCHEMA)
    op.drop_column("segments", "alert_id", schema=SCHEMA)
    op.add_column("segments", sa.Column("last_arrival_at", TS), schema=SCHEMA)
    op.create_table(
        "rule_states",
        sa.Column("rule", sa.Text, primary_key=True),
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("since", TS),
        sa.Column("evaluations", sa.Integer, nullable=False),
        sa.Column("alert_id", sa.Text),
        sa.Column("cooldown_until", TS),
        sa.Column("flaps", sa.Integer, nullable=False),
        schema=SCHEMA,
    )
    op.add_column("alerts", sa.Column("rule", sa.Text, nullable=False, server_default="drop"), schema=SCHEMA)
    op.add_column("alerts", sa.Column("explanation", JSONB), schema=SCHEMA)
    op.add_column("alerts", sa.Column("resolution", JSONB), schema=SCHEMA)
    op.add_column("alerts", sa.Column("acknowledged_by", sa.Text), schema=SCHEMA)
    op.add_column("alerts", sa.Column("acknowledged_at", TS), schema=SCHEMA)
    op.add_column("alerts", sa.Column("ack_note", sa.Text), schema=SCHEMA)
    op.add_column("alerts", sa.Column("silence_id", sa.Text), schema=SCHEMA)
    op.add_column("alerts", sa.Column("flaps", sa.Integer, nullable=False, server_default="0"), schema=SCHEMA)
    op.execute(
        f"""UPDATE {SCHEMA}.alerts SET explanation = jsonb_build_object(
            'summary', format('NPS of %s fell %s points (the fixed-threshold rule of version 1)',
                              segment, round((baseline_nps - current_nps)::numeric, 1)),
            'as_of', as_of, 'current_nps', current_nps, 'baseline_nps', baseline_nps,
            'current_n', current_n, 'baseline_n', baseline_n, 'drop_points', baseline_nps - current_nps)"""
    )
    for column in ("as_of", "current_nps", "baseline_nps", "current_n", "baseline_n"):
        op.drop_column("alerts", column, schema=SCHEMA)
    op.alter_column("alerts", "explanation", nullable=False, schema=SCHEMA)
    op.alter_column("alerts", "rule", server_default=None, schema=SCHEMA)
    op.create_index("alerts_open", "alerts", ["rule", "segment"], schema=SCHEMA, postgresql_where="resolved_at IS NULL")
    op.create_table(
        "silences",
        sa.Column("silence_id", sa.Text, primary_key=True),
        sa.Column("matcher", sa.Text, nullable=False),
        sa.Column("rule", sa.Text),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deleted_at", TS),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("silences", schema=SCHEMA)
    op.drop_index("alerts_open", "alerts", schema=SCHEMA)
    for column, kind in (
        ("as_of", sa.Date), ("current_nps", sa.Float), ("baseline_nps", sa.Float),
        ("current_n", sa.Integer), ("baseline_n", sa.Integer),
    ):  # fmt: skip
        op.add_column("alerts", sa.Column(column, kind), schema=SCHEMA)
    # Version 1 knew the drop rule only, and numbers the others do not have.
    op.execute(
        f"DELETE FROM {SCHEMA}.alerts WHERE rule <> 'drop' OR explanation->'current' IS NULL AND explanation->'current_nps' IS NULL"
    )
    op.execute(
        f"""UPDATE {SCHEMA}.alerts SET
            as_of = coalesce((explanation->>'as_of')::date, (explanation->'current'->>'last_day')::date),
            current_nps = coalesce((explanation->>'current_nps')::float, (explanation->'current'->>'nps')::float, 0),
            baseline_nps = coalesce((explanation->>'baseline_nps')::float, (explanation->'baseline'->>'nps')::float, 0),
            current_n = coalesce((explanation->>'current_n')::int, (explanation->'current'->>'promoters')::int
                + (explanation->'current'->>'passives')::int + (explanation->'current'->>'detractors')::int),
            baseline_n = coalesce((explanation->>'baseline_n')::int, (explanation->'baseline'->>'promoters')::int
                + (explanation->'baseline'->>'passives')::int + (explanation->'baseline'->>'detractors')::int)"""
    )
    for column in ("as_of", "current_nps", "baseline_nps", "current_n", "baseline_n"):
        op.alter_column("alerts", column, nullable=False, schema=SCHEMA)
    for column in (
        "rule",
        "explanation",
        "resolution",
        "acknowledged_by",
        "acknowledged_at",
        "ack_note",
        "silence_id",
        "flaps",
    ):
        op.drop_column("alerts", column, schema=SCHEMA)
    op.drop_table("rule_states", schema=SCHEMA)
    op.drop_column("segments", "last_arrival_at", schema=SCHEMA)
    op.add_column("segments", sa.Column("firing", sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA)
    op.add_column("segments", sa.Column("alert_id", sa.Text), schema=SCHEMA)
    op.execute(
        f"""UPDATE {SCHEMA}.segments s SET firing = true, alert_id = a.alert_id
            FROM {SCHEMA}.alerts a WHERE a.segment = s.segment AND a.resolved_at IS NULL"""
    )
    op.alter_column("segments", "firing", server_default=None, schema=SCHEMA)
    op.rename_table("segments", "segment_states", schema=SCHEMA)
    op.drop_index("arrivals_bucket", "arrivals", schema=SCHEMA)
    op.drop_table("arrivals", schema=SCHEMA)
    op.drop_table("daily", schema=SCHEMA)
