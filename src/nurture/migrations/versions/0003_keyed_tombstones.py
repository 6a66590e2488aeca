"""keyed tombstones

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 17:30:00.000000

``subscribers.email_hash`` was the plain SHA-256 of the address, so anyone holding a copy of the
database could hash a guessed address and learn whether that person subscribed, or asked to be
erased. From here it is HMAC-SHA256, keyed with a pepper made here at random and kept in the new
``app_secrets`` table (in the database, not derived from NURTURE_SECRET_KEY, so rotating that key
never orphans a tombstone).

The HMAC is taken over the plain hash, which is what makes every row convertible: a row with an
address is keyed from the address, an erased row (no address left) from the plain hash it kept.
No plain hash is left behind. This file computes the hashes itself rather than importing
nurture.validation, so that it keeps doing what it did when it was written.
"""
import hashlib
import hmac
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PEPPER = 'tombstone_pepper'
BATCH = 1000

app_secrets = sa.table('app_secrets', sa.column('name', sa.String), sa.column('value', sa.String))
subscribers = sa.table('subscribers', sa.column('id', sa.Integer), sa.column('email', sa.String),
                       sa.column('email_hash', sa.String))


def _plain(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def _keyed(pepper: bytes, plain_hash: str) -> str:
    return hmac.new(pepper, plain_hash.encode('ascii'), hashlib.sha256).hexdigest()


def upgrade() -> None:
    op.create_table('app_secrets',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=256), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    pepper = secrets.token_bytes(32)
    op.bulk_insert(app_secrets, [{'name': PEPPER, 'value': pepper.hex()}])
    _rehash(lambda email, old: _keyed(pepper, _plain(email) if email is not None else old))


def downgrade() -> None:
    connection = op.get_bind()
    erased = connection.scalar(sa.select(sa.func.count()).select_from(subscribers)
                               .where(subscribers.c.email.is_(None)))
    if erased:
        # Their plain hash is gone for good; without it, version 0002 would let an old list
        # re-add these addresses. Refuse rather than quietly lose the suppression.
        raise RuntimeError(f'{erased} erased subscriber(s) have only a keyed tombstone, which 0002 cannot read; '
                           'downgrading would let their addresses be imported again')
    _rehash(lambda email, old: _plain(email))
    op.drop_table('app_secrets')


def _rehash(new_hash) -> None:
    """Rewrite every row's email_hash as ``new_hash(email, old hash)``, a batch at a time."""
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.email_hash)
            .where(subscribers.c.id > last).order_by(subscribers.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            subscribers.update().where(subscribers.c.id == sa.bindparam('row_id'))
            .values(email_hash=sa.bindparam('new_hash')),
            [{'row_id': row_id, 'new_hash': new_hash(email, old)} for row_id, email, old in rows],
        )
        last = rows[-1][0]
