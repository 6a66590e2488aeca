"""Finding a subscriber by address: addresses are looked up by a keyed hash, never by their text.

The key (the tombstone pepper) is made once, at random, by migration 0003 and kept in the
database, so an erased address's tombstone still matches it after NURTURE_SECRET_KEY rotates.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from sqlalchemy import Pool, select
from sqlalchemy.orm import Session

from nurture.models import TOMBSTONE_PEPPER, AppSecret, Subscriber
from nurture.people.validation import email_hash, keyed_email_hash

__all__ = ["PepperMissing", "find_by_email", "hashes_to_match", "stored_hash", "tombstone_pepper"]


class PepperMissing(RuntimeError):
    """The database has no tombstone pepper: its schema predates migration 0003."""


# One pepper per database, read on first use and kept for the life of the engine (so per process):
# a signup must not cost a query for it. Keyed by the engine's connection pool, which the engine
# shares with its variants (a Database's write sessions use the engine with another BEGIN, see
# nurture.db), so all of them read it once.
_peppers: WeakKeyDictionary[Pool, bytes] = WeakKeyDictionary()


def tombstone_pepper(session: Session) -> bytes:
    """The key of the stored address hashes: made once, at random, by migration 0003 and kept in
    the database, so rotating NURTURE_SECRET_KEY never orphans a tombstone."""
    pool = session.get_bind().engine.pool
    pepper = _peppers.get(pool)
    if pepper is None:
        value = session.scalar(select(AppSecret.value).where(AppSecret.name == TOMBSTONE_PEPPER))
        if value is None:
            raise PepperMissing("the database has no tombstone pepper: run `nurture db upgrade`")
        pepper = _peppers[pool] = bytes.fromhex(value)
    return pepper


def stored_hash(session: Session, normalised_email: str) -> str:
    """The hash to store for an address (``Subscriber.email_hash``)."""
    return keyed_email_hash(normalised_email, tombstone_pepper(session))


def hashes_to_match(session: Session, normalised_email: str) -> tuple[str, str]:
    """Every hash a row of this address can have: the keyed one, and the plain one a process still
    on the previous version may have written while the database was being upgraded."""
    return stored_hash(session, normalised_email), email_hash(normalised_email)


def find_by_email(session: Session, normalised_email: str) -> Subscriber | None:
    """The subscriber with this (normalised) address, whichever hash its row was stored under."""
    keyed, plain = hashes_to_match(session, normalised_email)
    # Should both exist (an old process added the address again mid-upgrade), the keyed row wins.
    return session.scalar(
        select(Subscriber).where(Subscriber.email_hash.in_((keyed, plain)))
        .order_by((Subscriber.email_hash == keyed).desc()).limit(1)
    )
