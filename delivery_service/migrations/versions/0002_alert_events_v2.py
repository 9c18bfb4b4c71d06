"""delivery: subscriptions to the alert events of nps.alerts.v1 follow them to v2
(ScoreDropDetected -> AlertFired, ScoreDropResolved -> AlertResolved).

Revision ID: delivery_0002
Revises: delivery_0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "delivery_0002"
down_revision = "delivery_0001"
branch_labels = None
depends_on = None

SCHEMA = "delivery"


def _rename(pairs: list[tuple[str, str]]) -> None:
    for old, new in pairs:
        op.execute(
            f"""UPDATE {SCHEMA}.subscriptions SET events = array_replace(events, '{old}', '{new}')
                WHERE '{old}' = ANY(events)"""
        )


def upgrade() -> None:
    _rename([("ScoreDropDetected", "AlertFired"), ("ScoreDropResolved", "AlertResolved")])


def downgrade() -> None:
    op.execute(f"UPDATE {SCHEMA}.subscriptions SET events = array_remove(events, 'AlertAcknowledged')")
    _rename([("AlertFired", "ScoreDropDetected"), ("AlertResolved", "ScoreDropResolved")])
