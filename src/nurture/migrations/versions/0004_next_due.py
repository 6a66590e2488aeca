"""next due instant per subscriber

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:00:00.000000

``subscribers.next_due_at`` (indexed with status and wants_series) lets a pass plan only the people
whose next step may be due, instead of everyone. Existing rows start at 1970-01-01, "work it out
at the next pass": the first pass after the upgrade looks at everyone once, as every pass used to.
``planner_state`` keeps what those instants were computed from, so an edit of the sequence or of
the send window makes the planner look at everyone again.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite stores these instants as naive UTC text, PostgreSQL as timestamptz.
    epoch = "1970-01-01 00:00:00.000000" if op.get_bind().dialect.name == "sqlite" else "1970-01-01 00:00:00+00"
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=False,
                                   server_default=sa.text(f"'{epoch}'")))
    op.create_index("ix_subscribers_next_due", "subscribers", ["status", "wants_series", "next_due_at"])
    op.create_table(
        "planner_state",
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )


def downgrade() -> None:
    op.drop_table("planner_state")
    op.drop_index("ix_subscribers_next_due", table_name="subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("next_due_at")
