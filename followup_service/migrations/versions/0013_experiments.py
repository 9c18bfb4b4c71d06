"""followup: experiments (issue 38). A policy rule may hold out a share of the people it matches or
split them across arms: the experiments a policy ran, with their arms as first recorded (a reload
that changes them is refused), each person's arm from the answer that assigned them, and the arm
on the follow-up (status `held_out`: the arm gets nothing from the rule).

Revision ID: followup_0013
Revises: followup_0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "followup_0013"
down_revision = "followup_0012"
branch_labels = None
depends_on = None

SCHEMA = "followup"
BEFORE = "status IN ('created', 'failed', 'suppressed')"
AFTER = "status IN ('created', 'failed', 'suppressed', 'held_out')"


def upgrade() -> None:
    op.drop_constraint("followups_status", "followups", schema=SCHEMA)
    op.create_check_constraint("followups_status", "followups", AFTER, schema=SCHEMA)
    op.add_column("followups", sa.Column("experiment_id", sa.Text), schema=SCHEMA)
    op.add_column("followups", sa.Column("arm", sa.Text), schema=SCHEMA)
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.Text, primary_key=True),
        # [[name, weight, action], ...] in the policy's order, as first recorded
        sa.Column("arms", postgresql.JSONB, nullable=False),
        sa.Column("control", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("policy_version", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "experiment_assignments",
        sa.Column("experiment_id", sa.Text, primary_key=True),
        sa.Column("respondent_key", sa.Text, primary_key=True),  # the keyed hash: erasure removes the row
        sa.Column("arm", sa.Text, nullable=False),
        sa.Column("response_id", sa.Text, nullable=False),  # the answer that assigned them
        sa.Column("score", sa.SmallInteger, nullable=False),  # its score: the results' covariate (CUPED)
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("experiment_assignments_person", "experiment_assignments", ["respondent_key"], schema=SCHEMA)
    # An experiment's results join each assigning answer to the person's next one.
    op.create_index("transitions_previous", "transitions", ["previous_response_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("transitions_previous", "transitions", schema=SCHEMA)
    op.drop_table("experiment_assignments", schema=SCHEMA)
    op.drop_table("experiments", schema=SCHEMA)
    op.drop_column("followups", "arm", schema=SCHEMA)
    op.drop_column("followups", "experiment_id", schema=SCHEMA)
    op.execute(f"DELETE FROM {SCHEMA}.followups WHERE status = 'held_out'")
    op.drop_constraint("followups_status", "followups", schema=SCHEMA)
    op.create_check_constraint("followups_status", "followups", BEFORE, schema=SCHEMA)
