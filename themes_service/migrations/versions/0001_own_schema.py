"""themes: its own schema. The tables the themes consumer kept in scoring's schema move here with
their rows; the segment catalog and the erasure requests it read there are copied; an outbox of its
own (themes publishes nothing yet; the consumer loop's relay reads one).

- theme_responses, theme_daily, theme_comments: moved (ALTER TABLE ... SET SCHEMA: the rows, indexes
  and constraints go with them, nothing is copied or rewritten);
- segments: a copy of scoring.segments, so themes goes on counting the same segments (from now on
  it catalogues them itself, under the same cardinality cap);
- erasures: a copy of scoring.erasures, so an erasure requested before the move still reaches a
  late event of that person here.

Needs scoring's history at scoring_0007 (where scoring_0005-0006 created these tables): `nps
migrate` applies scoring's migrations before themes' (shared.db.SERVICE_SCHEMAS); alone, this
refuses to run on a database scoring's history has not brought there. Downgrading scoring below
scoring_0007 needs this one downgraded first.

Revision ID: themes_0001
Revises:
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from shared.outbox import create_outbox, pack_outbox

revision = "themes_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "themes"
MOVED = ("theme_responses", "theme_daily", "theme_comments")
COPIED = ("segments", "erasures")
SCORING_AT = "scoring_0007"


def upgrade() -> None:
    bind = op.get_bind()
    at = bind.execute(sa.text("SELECT to_regclass('scoring.alembic_version') IS NOT NULL")).scalar()
    version = bind.execute(sa.text("SELECT version_num FROM scoring.alembic_version")).scalar() if at else None
    if version is None or bind.execute(sa.text("SELECT to_regclass('scoring.theme_responses')")).scalar() is None:
        raise RuntimeError(
            f"themes_0001 moves the theme tables out of scoring's schema: migrate scoring first (to "
            f"{SCORING_AT} or later; `nps migrate` does both in order); scoring is at {version or 'nothing'}"
        )
    for table in MOVED:
        op.execute(f"ALTER TABLE scoring.{table} SET SCHEMA {SCHEMA}")
    for table in COPIED:
        op.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE scoring.{table} INCLUDING ALL)")
        op.execute(f"INSERT INTO {SCHEMA}.{table} SELECT * FROM scoring.{table}")
    create_outbox(op, SCHEMA)
    pack_outbox(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    for table in COPIED:
        op.drop_table(table, schema=SCHEMA)
    for table in MOVED:
        op.execute(f"ALTER TABLE {SCHEMA}.{table} SET SCHEMA scoring")
