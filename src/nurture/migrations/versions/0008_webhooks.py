"""webhooks out: endpoints, events, deliveries and their log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:30:00.000000

An event is written in the transaction of the change it reports, with one delivery row per
endpoint that asked for its kind (a transactional outbox); a worker posts the deliveries under
owned leases, as the mail outbox does, and logs each attempt.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('webhook_endpoints',
    sa.Column('id', _ID, nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('events', sa.String(length=200), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('created_at', _TIME, nullable=False),
    sa.Column('last_success_at', _TIME, nullable=True),
    sa.Column('last_failure_at', _TIME, nullable=True),
    sa.Column('last_failure_reason', sa.String(length=200), nullable=True),
    sa.Column('failing_since', _TIME, nullable=True),
    sa.Column('paused_at', _TIME, nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('webhook_events',
    sa.Column('id', _ID, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', _TIME, nullable=False),
    sa.Column('subscriber_id', _ID, nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('public_id')
    )
    op.create_index('ix_webhook_events_subscriber_id', 'webhook_events', ['subscriber_id'])
    op.create_table('webhook_deliveries',
    sa.Column('id', _ID, nullable=False),
    sa.Column('event_id', _ID, nullable=False),
    sa.Column('endpoint_id', _ID, nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('due_at', _TIME, nullable=False),
    sa.Column('created_at', _TIME, nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=64), nullable=True),
    sa.Column('lease_until', _TIME, nullable=True),
    sa.Column('delivered_at', _TIME, nullable=True),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'endpoint_id', name='uq_webhook_delivery_event_endpoint')
    )
    op.create_index('ix_webhook_deliveries_state_due', 'webhook_deliveries', ['state', 'due_at'])
    op.create_index('ix_webhook_deliveries_endpoint_id', 'webhook_deliveries', ['endpoint_id'])
    op.create_table('webhook_attempts',
    sa.Column('id', _ID, nullable=False),
    sa.Column('delivery_id', _ID, nullable=False),
    sa.Column('endpoint_id', _ID, nullable=False),
    sa.Column('at', _TIME, nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_attempts_delivery_id', 'webhook_attempts', ['delivery_id'])
    op.create_index('ix_webhook_attempts_endpoint_at', 'webhook_attempts', ['endpoint_id', 'at'])


def downgrade() -> None:
    op.drop_table('webhook_attempts')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_events')
    op.drop_table('webhook_endpoints')
