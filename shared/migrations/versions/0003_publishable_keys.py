"""auth: publishable keys (safe inside a web page or an app), bound to origins, surveys and a
channel, with a sealed identity secret (the app's server hashes respondent ids with it)

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "auth_0003"
down_revision = "auth_0002"
branch_labels = None
depends_on = None

SCHEMA = "auth"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # The kind is stored with the key, never read from its prefix.
    op.add_column("api_keys", sa.Column("kind", sa.Text, nullable=False, server_default="secret"), schema=SCHEMA)
    op.create_check_constraint("api_keys_kind", "api_keys", "kind IN ('secret', 'publishable')", schema=SCHEMA)
    empty = sa.text("'{}'")
    for column in ("origins", "surveys"):
        op.add_column(
            "api_keys",
            sa.Column(column, postgresql.ARRAY(sa.Text), nullable=False, server_default=empty),
            schema=SCHEMA,
        )
    op.add_column("api_keys", sa.Column("channel", sa.Text), schema=SCHEMA)
    for flag in ("native", "anonymous"):
        op.add_column("api_keys", sa.Column(flag, sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA)
    # Sealed (shared/sealed.py, bound to the key's name): the current secret, and the previous one
    # until `identity_previous_until` during a rotation's overlap.
    op.add_column("api_keys", sa.Column("identity_secret", sa.Text), schema=SCHEMA)
    op.add_column("api_keys", sa.Column("identity_previous", sa.Text), schema=SCHEMA)
    op.add_column("api_keys", sa.Column("identity_previous_until", TS), schema=SCHEMA)


def downgrade() -> None:
    op.execute(f"DELETE FROM {SCHEMA}.api_keys WHERE kind = 'publishable'")
    for column in (
        "identity_previous_until",
        "identity_previous",
        "identity_secret",
        "anonymous",
        "native",
        "channel",
        "surveys",
        "origins",
        "kind",
    ):
        op.drop_column("api_keys", column, schema=SCHEMA)
