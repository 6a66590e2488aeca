"""The rules over subscribers: subscribe, confirm, unsubscribe, and the consent ledger.

Every function takes an open Session (the caller owns the transaction) and ``now``.
Responses to the outside world must not reveal whether an address is known, so ``subscribe``
returns what to *do*, never a message for the person.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from nurture import outbox
from nurture.message_key import ALL_PREFIXES, BROADCAST_PREFIX, CONFIRMATION_PREFIX, SEQUENCE_PREFIX, MessageKey
from nurture.models import (UNPLANNED, TOMBSTONE_PEPPER, AppSecret, ConsentEvent, OutboxMessage, OutboxState,
                            Status, Subscriber)
from nurture.validation import Signup, email_hash, keyed_email_hash

# The exact words shown beside the consent checkbox, by version. Never edit a published version:
# add a new one, so the ledger can always show what a person agreed to.
CONSENT_WORDINGS = {
    "2026-11-28": (
        "Yes, email me Clearwater Psychiatry's short series about ketamine treatment for depression "
        "(four emails over about a week) and then the occasional newsletter. I can unsubscribe at any "
        "time with one click. These emails are educational and are not medical advice."
    ),
}
CONSENT_VERSION = "2026-11-28"
CONFIRM_TEMPLATE = "system/confirm.html.j2"
RESEND_AFTER = timedelta(minutes=10)
_CAN_OPT_IN_AGAIN = (Status.unsubscribed, Status.erased, Status.bounced, Status.complained)
UNSUBSCRIBE_SCOPES = ("all", "series", "newsletter")


@dataclass(frozen=True)
class RequestInfo:
    """Who asked, for the consent ledger."""

    ip: str | None
    user_agent: str | None
    source: str


@dataclass(frozen=True)
class SignupOutcome:
    subscriber_id: int | None
    confirmation_queued: bool


@dataclass(frozen=True)
class SignupRequest:
    """One signup as it arrived: what the person sent, who sent it, and when."""

    signup: Signup
    request: RequestInfo
    now: datetime


class PepperMissing(RuntimeError):
    """The database has no tombstone pepper: its schema predates migration 0003."""


# One pepper per database, read on first use and kept for the life of the engine (so per process):
# a signup must not cost a query for it.
_peppers: WeakKeyDictionary[Engine, bytes] = WeakKeyDictionary()


def tombstone_pepper(session: Session) -> bytes:
    """The key of the stored address hashes: made once, at random, by migration 0003 and kept in
    the database, so rotating NURTURE_SECRET_KEY never orphans a tombstone."""
    engine = session.get_bind()
    pepper = _peppers.get(engine)
    if pepper is None:
        value = session.scalar(select(AppSecret.value).where(AppSecret.name == TOMBSTONE_PEPPER))
        if value is None:
            raise PepperMissing("the database has no tombstone pepper: run `nurture db upgrade`")
        pepper = _peppers[engine] = bytes.fromhex(value)
    return pepper


def stored_hash(session: Session, normalised_email: str) -> str:
    """The hash to store for an address (``Subscriber.email_hash``)."""
    return keyed_email_hash(normalised_email, tombstone_pepper(session))


def hashes_to_match(session: Session, normalised_email: str) -> tuple[str, str]:
    """Every hash a row of this address can have: the keyed one, and the plain one a process still
    on the previous version may have written while the database was being upgraded."""
    return stored_hash(session, normalised_email), email_hash(normalised_email)


def find_by_email(session: Session, normalised_email: str) -> Subscriber | None:
    keyed, plain = hashes_to_match(session, normalised_email)
    # Should both exist (an old process added the address again mid-upgrade), the keyed row wins.
    return session.scalar(
        select(Subscriber).where(Subscriber.email_hash.in_((keyed, plain)))
        .order_by((Subscriber.email_hash == keyed).desc()).limit(1)
    )


def subscribe(
    session: Session,
    signup: Signup,
    *,
    now: datetime,
    request: RequestInfo,
    default_timezone: str,
    confirmations_per_day: int,
) -> SignupOutcome:
    """Record a signup and queue a confirmation email when one is due.

    New, unsubscribed, erased, bounced and complained addresses start a fresh double opt-in. A
    pending address gets another confirmation at most once per 10 minutes, and any address at most
    ``confirmations_per_day`` a day, so nobody can mail-bomb a stranger. Confirmed addresses get
    nothing (the answer to the person is the same either way).
    """
    if signup.honeypot_filled:
        return SignupOutcome(None, False)
    subscriber = find_by_email(session, signup.email)
    if subscriber is None:
        return _first_signup(session, signup, now=now, request=request, default_timezone=default_timezone)
    # A new double opt-in is a new, verified consent: it may follow an unsubscribe, an erasure,
    # a bounce (the mailbox works again) or a complaint (the person asked again themselves).
    fresh = subscriber.status in _CAN_OPT_IN_AGAIN
    if fresh:
        subscriber.email = signup.email
        subscriber.first_name = signup.first_name
        subscriber.timezone = signup.timezone or default_timezone
        subscriber.wants_series = subscriber.wants_newsletter = True
        _set_status(subscriber, Status.pending, now)
    elif subscriber.status is not Status.pending:
        return SignupOutcome(subscriber.id, False)

    _record_consent(session, subscriber.id, "signup", now, request, signup.consent_version)
    if not _may_send_confirmation(session, subscriber, now, confirmations_per_day, fresh=fresh):
        return SignupOutcome(subscriber.id, False)
    _queue_confirmation(session, subscriber, now)
    return SignupOutcome(subscriber.id, True)


def _queue_confirmation(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """A new round of the double opt-in: the next confirmation email, with a link of its own."""
    subscriber.confirm_round += 1
    outbox.enqueue(session, subscriber_id=subscriber.id, key=str(MessageKey.confirmation(subscriber.confirm_round)),
                   template=CONFIRM_TEMPLATE, due_at=now, now=now)


def subscribe_many(
    session: Session, requests: Sequence[SignupRequest], *, default_timezone: str, confirmations_per_day: int
) -> list[SignupOutcome]:
    """``subscribe`` for several signups in one transaction, in order and by the same rules (the
    web's group commit). Addresses never seen before, nearly every signup, cost one query to
    find that out and three multi-row INSERTs for the whole group; any other address, or one
    that comes twice in the group, goes through ``subscribe`` once the new rows before it exist,
    so it sees them."""
    outcomes: list[SignupOutcome] = [SignupOutcome(None, False)] * len(requests)  # the honeypot's
    hashes = {index: hashes_to_match(session, item.signup.email)
              for index, item in enumerate(requests) if not item.signup.honeypot_filled}
    known = set(session.connection().execute(_KNOWN_HASHES, {"hashes": [h for pair in hashes.values() for h in pair]})
                .scalars()) if hashes else set()
    fresh: list[int] = []
    seen: set[str] = set()

    def insert_fresh() -> None:
        ids = _insert_new_signups(session, [(requests[i], hashes[i][0]) for i in fresh],
                                  default_timezone=default_timezone)
        for index, subscriber_id in zip(fresh, ids):
            outcomes[index] = SignupOutcome(subscriber_id, True)
        fresh.clear()

    for index, item in enumerate(requests):
        if index not in hashes:
            continue
        keyed, plain = hashes[index]
        if keyed in known or plain in known or keyed in seen:
            if fresh:
                insert_fresh()
            outcomes[index] = subscribe(session, item.signup, now=item.now, request=item.request,
                                        default_timezone=default_timezone, confirmations_per_day=confirmations_per_day)
        else:
            seen.add(keyed)
            fresh.append(index)
    if fresh:
        insert_fresh()
    return outcomes


def _new_subscriber(session: Session, signup: Signup, *, status: Status, now: datetime, default_timezone: str,
                    confirm_round: int, stored: str | None = None) -> dict:
    """The column values of a new subscriber (for the form's signup and for imports alike);
    ``stored`` is the address's stored hash when the caller has it already."""
    return dict(email=signup.email, email_hash=stored or stored_hash(session, signup.email),
                first_name=signup.first_name, timezone=signup.timezone or default_timezone, status=status,
                wants_series=True, wants_newsletter=True, sequence="nurture", tags=[], created_at=now, updated_at=now,
                status_changed_at=now, confirmed_at=now if status is Status.confirmed else None,
                confirm_round=confirm_round)


# The signup's own statements, built once so their compiled forms are cached: Core INSERTs of the
# tables (no ORM unit of work, no per-call statement construction or cache-key generation), each
# run with a list of rows, one multi-row statement for a whole group.
_KNOWN_HASHES = select(Subscriber.email_hash).where(Subscriber.email_hash.in_(bindparam("hashes", expanding=True)))
# The new ids come back with their rows' unique hashes and are matched by them: asking for them
# in the order of the rows instead makes SQLite send one INSERT per row.
_INSERT_SUBSCRIBERS = insert(Subscriber.__table__).returning(Subscriber.__table__.c.email_hash,
                                                             Subscriber.__table__.c.id)
_INSERT_CONSENT = insert(ConsentEvent.__table__)
_INSERT_OUTBOX = insert(OutboxMessage.__table__)


def _insert_new_signups(
    session: Session, entries: Sequence[tuple[SignupRequest, str]], *, default_timezone: str
) -> list[int]:
    """New pending subscribers (with their stored hashes), each with a signup row in the consent
    ledger and its first confirmation email queued; their ids, in order. The caller knows the
    addresses are new, so nothing was ever sent to them and no rate check applies."""
    connection = session.connection()
    created = {stored: subscriber_id for stored, subscriber_id in connection.execute(_INSERT_SUBSCRIBERS, [
        _new_subscriber(session, item.signup, status=Status.pending, now=item.now,
                        default_timezone=default_timezone, confirm_round=1, stored=stored)
        for item, stored in entries
    ])}
    ids = [created[stored] for _item, stored in entries]
    connection.execute(_INSERT_CONSENT, [
        _consent_values(subscriber_id, "signup", item.now, item.request, item.signup.consent_version)
        for (item, _stored), subscriber_id in zip(entries, ids)
    ])
    # The row outbox.enqueue writes for the first confirmation; a new subscriber has no row with that key,
    # so no ON CONFLICT.
    connection.execute(_INSERT_OUTBOX, [
        outbox.queued_row(subscriber_id=subscriber_id, key=str(MessageKey.confirmation(1)), template=CONFIRM_TEMPLATE,
                          due_at=item.now, now=item.now)
        for (item, _stored), subscriber_id in zip(entries, ids)
    ])
    return ids


def _first_signup(
    session: Session, signup: Signup, *, now: datetime, request: RequestInfo, default_timezone: str
) -> SignupOutcome:
    """A new address: three plain INSERTs (no ORM unit of work); no rate check is needed, since
    nothing was ever sent to it."""
    entry = (SignupRequest(signup, request, now), stored_hash(session, signup.email))
    [subscriber_id] = _insert_new_signups(session, [entry], default_timezone=default_timezone)
    return SignupOutcome(subscriber_id, True)


def add_confirmed(
    session: Session, people: Sequence[Signup], *, now: datetime, source: str, default_timezone: str
) -> list[int]:
    """Create new subscribers whose consent was obtained outside the signup form (a paper form at
    the clinic), confirmed at ``now`` without a double opt-in. Each gets an ``import`` row in the
    consent ledger with the current wording and ``source`` saying how consent was obtained, so
    the ledger can answer for it. The caller checks first that none of the addresses exist."""
    created = [
        Subscriber(**_new_subscriber(session, person, status=Status.confirmed, now=now,
                                     default_timezone=default_timezone, confirm_round=0))
        for person in people
    ]
    session.add_all(created)
    session.flush()  # one multi-row INSERT for the whole group, for the ids the ledger needs
    request = RequestInfo(ip=None, user_agent=None, source=source)
    for subscriber in created:
        _record_consent(session, subscriber.id, "import", now, request, CONSENT_VERSION)
    return [subscriber.id for subscriber in created]


def _may_send_confirmation(
    session: Session, subscriber: Subscriber, now: datetime, per_day: int, *, fresh: bool
) -> bool:
    """The daily cap always applies; the 10-minute pause only between repeats of one opt-in."""
    recent = session.execute(
        select(func.count(), func.max(OutboxMessage.created_at)).where(
            OutboxMessage.subscriber_id == subscriber.id,
            OutboxMessage.key.startswith(CONFIRMATION_PREFIX),
            OutboxMessage.created_at > now - timedelta(days=1),
        )
    ).one()
    count, latest = recent
    if count >= per_day:
        return False
    return fresh or latest is None or now - latest >= RESEND_AFTER


class ConfirmResult(enum.Enum):
    """What a confirmation attempt did, so the page can say so."""

    confirmed = "confirmed"
    already = "already-confirmed"
    not_pending = "not-pending"


def confirm(
    session: Session, subscriber_id: int, round_: int, *, now: datetime, request: RequestInfo
) -> ConfirmResult:
    """Confirm a pending subscriber (idempotent). The sequence starts from ``confirmed_at``."""
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    if subscriber is None or round_ > subscriber.confirm_round:
        return ConfirmResult.not_pending
    if subscriber.status is Status.confirmed:
        return ConfirmResult.already
    if subscriber.status is not Status.pending:
        return ConfirmResult.not_pending
    _set_status(subscriber, Status.confirmed, now)
    subscriber.confirmed_at = now
    subscriber.next_due_at = UNPLANNED  # their first step is worked out by the next pass
    last_signup = session.scalar(
        select(ConsentEvent.wording_version)
        .where(ConsentEvent.subscriber_id == subscriber.id, ConsentEvent.kind == "signup")
        .order_by(ConsentEvent.id.desc())
        .limit(1)
    )
    _record_consent(session, subscriber.id, "confirm", now, request, last_signup)
    return ConfirmResult.confirmed


def unsubscribe(
    session: Session, subscriber_id: int, *, scope: str = "all", now: datetime, request: RequestInfo
) -> bool:
    """Withdraw consent for ``scope`` (all, series or newsletter). Idempotent; returns whether
    anything changed. Queued mail that the withdrawal covers is cancelled in the same
    transaction, and the sender re-checks at claim time, so the unsubscribe always wins."""
    if scope not in UNSUBSCRIBE_SCOPES:
        raise ValueError(f"unknown unsubscribe scope {scope!r}")
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    if subscriber is None or subscriber.status not in (Status.pending, Status.confirmed):
        return False
    before = (subscriber.status, subscriber.wants_series, subscriber.wants_newsletter)
    if scope in ("all", "series"):
        subscriber.wants_series = False
    if scope in ("all", "newsletter"):
        subscriber.wants_newsletter = False
    if scope == "all" or not (subscriber.wants_series or subscriber.wants_newsletter):
        _set_status(subscriber, Status.unsubscribed, now)
    if (subscriber.status, subscriber.wants_series, subscriber.wants_newsletter) == before:
        return False
    subscriber.updated_at = now
    _record_consent(session, subscriber.id, "withdraw", now, request, None, scope=scope)
    outbox.cancel_pending(session, subscriber.id, _key_prefixes(subscriber), now=now)
    outbox.record_event(session, "unsubscribed", now, subscriber_id=subscriber.id, detail=scope)
    return True


def resend_confirmation(
    session: Session, subscriber_id: int, *, now: datetime, request: RequestInfo, confirmations_per_day: int
) -> bool:
    """Another confirmation email for a person still pending, asked for by the clinic (someone on
    the phone says it never came): no 10-minute pause, but the daily cap still holds, so nobody
    can mail-bomb a stranger this way either. Recorded in the consent ledger with who asked
    (``request.source``). Returns whether one was queued."""
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    if subscriber is None or subscriber.status is not Status.pending:
        return False
    if not _may_send_confirmation(session, subscriber, now, confirmations_per_day, fresh=True):
        return False
    _queue_confirmation(session, subscriber, now)
    _record_consent(session, subscriber.id, "resend-confirm", now, request, None)
    return True


def renew_confirmation(
    session: Session, subscriber_id: int, *, now: datetime, request: RequestInfo, default_timezone: str,
    confirmations_per_day: int,
) -> tuple[Signup | None, bool]:
    """Someone followed an expired confirmation link: the same as signing up again with the
    address it was sent to (the usual pause and daily cap hold). Returns that signup, to show the
    person the address they already saw (None when the person was erased meanwhile), and whether
    a confirmation email was queued."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or not subscriber.email:
        return None, False
    signup = Signup(subscriber.email, subscriber.first_name, subscriber.timezone, None, False)
    outcome = subscribe(session, signup, now=now, request=request, default_timezone=default_timezone,
                        confirmations_per_day=confirmations_per_day)
    return signup, outcome.confirmation_queued


RESUME_SCOPES = ("series", "newsletter")


def may_resume(subscriber: Subscriber) -> bool:
    """Can this person turn emails back on from their preferences page? Only someone who once
    confirmed and then stopped (not a bounce, a spam complaint or an erasure: those come back
    through a new signup and its double opt-in)."""
    return subscriber.confirmed_at is not None and subscriber.status in (Status.confirmed, Status.unsubscribed)


def resume(session: Session, subscriber_id: int, *, scope: str, now: datetime, request: RequestInfo) -> bool:
    """Turn the series or the newsletter back on for someone who stopped it (idempotent; returns
    whether anything changed). The link in their own email proves the address, as the confirmation
    link did, so this is a new consent: a ``resume`` row in the ledger with the current wording.

    The series goes on with the steps not yet sent: steps cancelled by the stop are forgotten (their
    unsent rows deleted, so the planner does not count them as had), and the person is planned again
    at the next pass."""
    if scope not in RESUME_SCOPES:
        raise ValueError(f"unknown resume scope {scope!r}")
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    if subscriber is None or not may_resume(subscriber):
        return False
    field = "wants_series" if scope == "series" else "wants_newsletter"
    if subscriber.status is Status.confirmed and getattr(subscriber, field):
        return False
    if subscriber.status is Status.unsubscribed:
        # Back from "everything stopped": only what they turn on now.
        subscriber.wants_series = subscriber.wants_newsletter = False
        _set_status(subscriber, Status.confirmed, now)
    setattr(subscriber, field, True)
    subscriber.updated_at = now
    if scope == "series":
        session.execute(delete(OutboxMessage).where(
            OutboxMessage.subscriber_id == subscriber.id, OutboxMessage.key.startswith(SEQUENCE_PREFIX),
            OutboxMessage.state == OutboxState.suppressed, OutboxMessage.sent_at.is_(None)))
    outbox.replan(session, [subscriber.id])
    _record_consent(session, subscriber.id, "resume", now, request, CONSENT_VERSION, scope=scope)
    outbox.record_event(session, "resubscribed", now, subscriber_id=subscriber.id, detail=scope)
    return True


def _key_prefixes(subscriber: Subscriber) -> tuple[str, ...]:
    """Outbox key prefixes this subscriber no longer wants."""
    if subscriber.status is Status.unsubscribed:
        return ALL_PREFIXES
    prefixes = []
    if not subscriber.wants_series:
        prefixes.append(SEQUENCE_PREFIX)
    if not subscriber.wants_newsletter:
        prefixes.append(BROADCAST_PREFIX)
    return tuple(prefixes)


def _set_status(subscriber: Subscriber, status: Status, now: datetime) -> None:
    subscriber.status = status
    subscriber.status_changed_at = now
    subscriber.updated_at = now


def _record_consent(
    session: Session,
    subscriber_id: int,
    kind: str,
    now: datetime,
    request: RequestInfo,
    version: str | None,
    *,
    scope: str = "all",
) -> None:
    session.execute(insert(ConsentEvent).values(**_consent_values(subscriber_id, kind, now, request, version,
                                                                   scope=scope)))


def _consent_values(
    subscriber_id: int, kind: str, now: datetime, request: RequestInfo, version: str | None, *, scope: str = "all"
) -> dict:
    """A consent-ledger row: who, when, from where, and the exact wording of the version agreed to."""
    if kind in ("signup", "confirm", "resume") and version not in CONSENT_WORDINGS:
        version = CONSENT_VERSION
    return dict(
        subscriber_id=subscriber_id,
        kind=kind,
        scope=scope,
        created_at=now,
        ip=request.ip,
        user_agent=(request.user_agent or "")[:512] or None,
        source=request.source,
        wording=CONSENT_WORDINGS.get(version) if version else None,
        wording_version=version,
    )


def mark_status(session: Session, subscriber_id: int, status: Status, now: datetime) -> None:
    """Set a delivery-driven status (bounced, complained) and cancel what is queued. A complaint
    is also a withdrawal of consent, so it goes into the consent ledger."""
    if status is Status.complained:
        _record_consent(session, subscriber_id, "withdraw", now, RequestInfo(None, None, "complaint"), None)
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(status=status, status_changed_at=now, updated_at=now)
    )
    outbox.cancel_pending(session, subscriber_id, ALL_PREFIXES, now=now)
