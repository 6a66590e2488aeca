"""New subscribers' rows: the column values of a new person, and the fast INSERTs that add them.

A signup from an address never seen before (nearly every signup) costs three multi-row Core
INSERTs for a whole group: the subscriber, a ``signup`` row in the consent ledger, and the first
confirmation email in the outbox. People whose consent was obtained elsewhere (a paper form) are
added confirmed, with an ``import`` row in the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from nurture.config import DEFAULT_SEQUENCE
from nurture.message_key import MessageKey
from nurture.models import ConsentEvent, OutboxMessage, Status, Subscriber
from nurture.people.address_hashes import stored_hash
from nurture.people.consent_ledger import CONSENT_VERSION, RequestInfo, consent_values, record_consent
from nurture.people.validation import Signup
from nurture.people.webhook_events import emit_many
from nurture.sending import outbox

__all__ = ["CONFIRM_TEMPLATE", "KNOWN_HASHES", "SignupRequest", "add_confirmed", "insert_new_signups",
           "new_subscriber_values"]

CONFIRM_TEMPLATE = "system/confirm.html.j2"


@dataclass(frozen=True)
class SignupRequest:
    """One signup as it arrived: what the person sent, who sent it, and when."""

    signup: Signup
    request: RequestInfo
    now: datetime


def new_subscriber_values(session: Session, signup: Signup, *, status: Status, now: datetime, default_timezone: str,
                          sequence: str, confirm_round: int, stored: str | None = None) -> dict:
    """The column values of a new subscriber (for the form's signup and for imports alike);
    ``stored`` is the address's stored hash when the caller has it already."""
    return dict(email=signup.email, email_hash=stored or stored_hash(session, signup.email),
                first_name=signup.first_name, timezone=signup.timezone or default_timezone, status=status,
                wants_series=True, wants_newsletter=True, sequence=sequence, tags=[], created_at=now, updated_at=now,
                status_changed_at=now, confirmed_at=now if status is Status.confirmed else None,
                confirm_round=confirm_round)


# The signup's own statements, built once so their compiled forms are cached: Core INSERTs of the
# tables (no ORM unit of work, no per-call statement construction or cache-key generation), each
# run with a list of rows, one multi-row statement for a whole group.
KNOWN_HASHES = select(Subscriber.email_hash).where(Subscriber.email_hash.in_(bindparam("hashes", expanding=True)))
# The new ids come back with their rows' unique hashes and are matched by them: asking for them
# in the order of the rows instead makes SQLite send one INSERT per row.
_INSERT_SUBSCRIBERS = insert(Subscriber.__table__).returning(Subscriber.__table__.c.email_hash,
                                                             Subscriber.__table__.c.id)
_INSERT_CONSENT = insert(ConsentEvent.__table__)
_INSERT_OUTBOX = insert(OutboxMessage.__table__)


def insert_new_signups(
    session: Session, entries: Sequence[tuple[SignupRequest, str]], *, default_timezone: str, sequence: str
) -> list[int]:
    """New pending subscribers (with their stored hashes), each with a signup row in the consent
    ledger and its first confirmation email queued; their ids, in order. The caller knows the
    addresses are new, so nothing was ever sent to them and no rate check applies."""
    connection = session.connection()
    created = {stored: subscriber_id for stored, subscriber_id in connection.execute(_INSERT_SUBSCRIBERS, [
        new_subscriber_values(session, item.signup, status=Status.pending, now=item.now,
                              default_timezone=default_timezone, sequence=sequence, confirm_round=1, stored=stored)
        for item, stored in entries
    ])}
    ids = [created[stored] for _item, stored in entries]
    connection.execute(_INSERT_CONSENT, [
        consent_values(subscriber_id, "signup", item.now, item.request, item.signup.consent_version)
        for (item, _stored), subscriber_id in zip(entries, ids)
    ])
    # The row outbox.enqueue writes for the first confirmation; a new subscriber has no row with that key,
    # so no ON CONFLICT.
    connection.execute(_INSERT_OUTBOX, [
        outbox.queued_row(subscriber_id=subscriber_id, key=str(MessageKey.confirmation(1)), template=CONFIRM_TEMPLATE,
                          due_at=item.now, now=item.now)
        for (item, _stored), subscriber_id in zip(entries, ids)
    ])
    emit_many(session, "subscribed", [dict(now=item.now, subscriber_id=subscriber_id, email=item.signup.email)
                                      for (item, _stored), subscriber_id in zip(entries, ids)])
    return ids


def add_confirmed(
    session: Session, people: Sequence[Signup], *, now: datetime, source: str, default_timezone: str,
    sequence: str = DEFAULT_SEQUENCE,
) -> list[int]:
    """Create new subscribers whose consent was obtained outside the signup form (a paper form at
    the clinic), confirmed at ``now`` without a double opt-in. Each gets an ``import`` row in the
    consent ledger with the current wording and ``source`` saying how consent was obtained, so
    the ledger can answer for it. The caller checks first that none of the addresses exist."""
    created = [
        Subscriber(**new_subscriber_values(session, person, status=Status.confirmed, now=now,
                                           default_timezone=default_timezone, sequence=sequence, confirm_round=0))
        for person in people
    ]
    session.add_all(created)
    session.flush()  # one multi-row INSERT for the whole group, for the ids the ledger needs
    request = RequestInfo(ip=None, user_agent=None, source=source)
    for subscriber in created:
        record_consent(session, subscriber.id, "import", now, request, CONSENT_VERSION)
    emit_many(session, "confirmed", [dict(now=now, subscriber_id=s.id, email=s.email) for s in created])
    return [subscriber.id for subscriber in created]
