"""goals: bookings of a consultation

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:30:00.000000

``goals`` keeps each booking the clinic's booking system (or the operator) reports: the person
(or, for an address nobody subscribed with, only a keyed hash of it and a masked hint), where it
came from, when it was booked and received, and the booking system's own id. A person's first
booking ends their sequence; the consent ledger is not touched.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "goals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("goal", sa.String(length=32), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("email_hint", sa.String(length=80), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "external_id", name="uq_goals_source_external_id"),
        sa.UniqueConstraint("email_hash", "booked_at", name="uq_goals_email_booked_at"),
    )
    op.create_index("ix_goals_subscriber_id", "goals", ["subscriber_id"])
    op.create_index("ix_goals_email_hash", "goals", ["email_hash"])
    op.create_index("ix_goals_received_at", "goals", ["received_at"])


def downgrade() -> None:
    op.drop_table("goals")
