"""delivery: webhook signing secrets sealed at rest (shared/sealed.py, NPS_SECRETS_KEY): the plain
secrets of existing subscriptions are sealed in place, bound to their subscription.

Revision ID: delivery_0003
Revises: delivery_0002
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import context, op

from shared.sealed import Sealer, is_sealed

revision = "delivery_0003"
down_revision = "delivery_0002"
branch_labels = None
depends_on = None

SCHEMA = "delivery"


def _place(subscription_id: str) -> str:  # as delivery_service.repository.place
    return f"{SCHEMA}.subscriptions:{subscription_id}"


def _sealer(doing: str) -> Sealer:
    sealer: Sealer | None = context.config.attributes.get("sealer")
    if sealer is None:
        raise RuntimeError(
            f"delivery.subscriptions holds webhook secrets to {doing}: set NPS_SECRETS_KEY (`nps secrets new-key` "
            "makes one; every service that reads them runs with it) and migrate again"
        )
    return sealer


def _convert(doing: str) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(f"SELECT subscription_id, secret, previous_secret FROM {SCHEMA}.subscriptions")).all()
    if not rows:
        return
    sealer = _sealer(doing)

    def converted(value: str | None, place: str) -> str | None:
        if value is None:
            return None
        if doing == "seal":
            return value if is_sealed(value) else sealer.seal(value, place)
        return sealer.open(value, place) if is_sealed(value) else value

    for subscription_id, secret, previous in rows:
        place = _place(subscription_id)
        conn.execute(
            sa.text(f"UPDATE {SCHEMA}.subscriptions SET secret = :s, previous_secret = :p WHERE subscription_id = :id"),
            {"s": converted(secret, place), "p": converted(previous, place), "id": subscription_id},
        )


def upgrade() -> None:
    _convert("seal")


def downgrade() -> None:
    _convert("open")
