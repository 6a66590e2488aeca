"""pass records, for /metrics

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:30:00.000000

``pass_log``: one row per sending pass, written when it ends by the process that sent it (the
scheduler, ``send-due``), so the web process can answer /metrics from the database alone. Small by
construction: past a few thousand rows the oldest are folded into one ``carried`` row.
``ix_subscribers_confirmed_at``: /metrics counts confirmations on every scrape from the index.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pass_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pass_id", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pass_log_outcome_finished", "pass_log", ["outcome", "finished_at"])
    op.create_index("ix_subscribers_confirmed_at", "subscribers", ["confirmed_at"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_confirmed_at", table_name="subscribers")
    op.drop_index("ix_pass_log_outcome_finished", table_name="pass_log")
    op.drop_table("pass_log")
