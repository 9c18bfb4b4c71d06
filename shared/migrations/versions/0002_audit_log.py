"""auth: an append-only audit log (who did what, when) every service can write to

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "auth_0002"
down_revision = "auth_0001"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),  # a key's name, or `cli:<user>`
        sa.Column("action", sa.Text, nullable=False),  # e.g. key.created, respondent.erasure_requested
        sa.Column("subject", sa.Text, nullable=False),  # what it was done to: a key name, an erasure id
        sa.Column("detail", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=SCHEMA,
    )
    op.create_index("audit_log_at", "audit_log", ["at"], schema=SCHEMA)
    # Append-only, enforced by the database itself: no UPDATE, no DELETE, no TRUNCATE.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'auth.audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        f"CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON {SCHEMA}.audit_log "
        f"FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.audit_log_is_append_only()"
    )
    op.execute(
        f"CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON {SCHEMA}.audit_log "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.audit_log_is_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_log", schema=SCHEMA)
    op.execute(f"DROP FUNCTION {SCHEMA}.audit_log_is_append_only()")
