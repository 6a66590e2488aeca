"""rate limits shared by every process on the database

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:15:00.000000

``send_budget`` holds the token buckets of NURTURE_RATE_PER_SECOND and NURTURE_RATE_PER_HOUR, so
the relay's limits hold for all senders together, not for each process. ``rate_windows`` counts
signups and wrong admin passwords per client address for every web process at once.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_budget",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refreshed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "rate_windows",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )


def downgrade() -> None:
    op.drop_table("rate_windows")
    op.drop_table("send_budget")
