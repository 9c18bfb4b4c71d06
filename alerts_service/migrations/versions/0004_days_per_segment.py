"""alerts: each segment's days in one row (`days`), not a row per day (`daily`)

A row holds the segment's counts for every day from `first_day` on, one element a day (0 on a day
without responses), in three int4[] of one length. A round's first read of 10,000 segments reads
10,000 rows, not 840,000 (PostgreSQL's aggregation of those was ~0.55 s of a ~1 s round), and the
table is a seventh of the size (docs/alerts.md, "The cost of a round").

Revision ID: alerts_0004
Revises: alerts_0003
Create Date: 2026-11-27
"""

from alembic import op

revision = "alerts_0004"
down_revision = "alerts_0003"
branch_labels = None
depends_on = None

SCHEMA = "alerts"


def upgrade() -> None:
    op.execute(
        f"""CREATE TABLE {SCHEMA}.days (
                segment text PRIMARY KEY,
                first_day date NOT NULL,
                promoters integer[] NOT NULL,
                passives integer[] NOT NULL,
                detractors integer[] NOT NULL,
                CONSTRAINT days_one_length CHECK (
                    cardinality(promoters) = cardinality(passives)
                    AND cardinality(passives) = cardinality(detractors)
                )
            )"""
    )
    op.execute(
        f"""INSERT INTO {SCHEMA}.days (segment, first_day, promoters, passives, detractors)
            SELECT s.segment, s.first,
                   array_agg(coalesce(d.promoters, 0) ORDER BY g.day),
                   array_agg(coalesce(d.passives, 0) ORDER BY g.day),
                   array_agg(coalesce(d.detractors, 0) ORDER BY g.day)
            FROM (SELECT segment, min(day) AS first, max(day) AS last FROM {SCHEMA}.daily GROUP BY segment) s
            CROSS JOIN LATERAL generate_series(s.first, s.last, interval '1 day') AS g(day)
            LEFT JOIN {SCHEMA}.daily d ON d.segment = s.segment AND d.day = CAST(g.day AS date)
            GROUP BY s.segment, s.first"""
    )
    op.execute(f"DROP TABLE {SCHEMA}.daily")


def downgrade() -> None:
    op.execute(
        f"""CREATE TABLE {SCHEMA}.daily (
                segment text NOT NULL,
                day date NOT NULL,
                promoters integer NOT NULL,
                passives integer NOT NULL,
                detractors integer NOT NULL,
                PRIMARY KEY (segment, day)
            )"""
    )
    op.execute(
        f"""INSERT INTO {SCHEMA}.daily (segment, day, promoters, passives, detractors)
            SELECT d.segment, d.first_day + CAST(x.i AS integer) - 1, x.p, x.pa, x.d
            FROM {SCHEMA}.days d
            CROSS JOIN LATERAL unnest(d.promoters, d.passives, d.detractors) WITH ORDINALITY AS x(p, pa, d, i)
            WHERE x.p + x.pa + x.d > 0"""
    )
    op.execute(f"DROP TABLE {SCHEMA}.days")
