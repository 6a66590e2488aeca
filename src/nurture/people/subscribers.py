"""The rules over subscribers: subscribe, confirm, unsubscribe, resume, and delivery-driven status.

Every function takes an open Session (the caller owns the transaction) and ``now``.
Responses to the outside world must not reveal whether an address is known, so ``subscribe``
returns what to *do*, never a message for the person.

Finding a person by address is :mod:`nurture.address_hashes`; the rows of a new person and the
fast signup INSERTs are :mod:`nurture.new_subscribers`; every consent given or withdrawn is
written to :mod:`nurture.consent_ledger`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from nurture.config import DEFAULT_SEQUENCE
from nurture.message_key import ALL_PREFIXES, BROADCAST_PREFIX, CONFIRMATION_PREFIX, SEQUENCE_PREFIX, MessageKey
from nurture.models import UNPLANNED, ConsentEvent, OutboxMessage, OutboxState, Status, Subscriber
from nurture.people.address_hashes import find_by_email, hashes_to_match, stored_hash
from nurture.people.consent_ledger import CONSENT_VERSION, RequestInfo, record_consent
from nurture.people.new_subscribers import CONFIRM_TEMPLATE, KNOWN_HASHES, SignupRequest, insert_new_signups
from nurture.people.validation import Signup
from nurture.people.webhook_events import emit
from nurture.sending import outbox
from nurture.sending.step_conditions import not_skipped

RESEND_AFTER = timedelta(minutes=10)
_CAN_OPT_IN_AGAIN = (Status.unsubscribed, Status.erased, Status.bounced, Status.complained)
UNSUBSCRIBE_SCOPES = ("all", "series", "newsletter")


@dataclass(frozen=True)
class SignupOutcome:
    subscriber_id: int | None
    confirmation_queued: bool


def subscribe(
    session: Session,
    signup: Signup,
    *,
    now: datetime,
    request: RequestInfo,
    default_timezone: str,
    confirmations_per_day: int,
    sequence: str = DEFAULT_SEQUENCE,
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
        return _first_signup(session, signup, now=now, request=request, default_timezone=default_timezone,
                             sequence=sequence)
    # A new double opt-in is a new, verified consent: it may follow an unsubscribe, an erasure,
    # a bounce (the mailbox works again) or a complaint (the person asked again themselves).
    fresh = subscriber.status in _CAN_OPT_IN_AGAIN
    if fresh:
        subscriber.email = signup.email
        subscriber.first_name = signup.first_name
        subscriber.timezone = signup.timezone or default_timezone
        subscriber.wants_series = subscriber.wants_newsletter = True
        _set_status(subscriber, Status.pending, now)
        emit(session, "subscribed", now=now, subscriber_id=subscriber.id, email=subscriber.email)
    elif subscriber.status is not Status.pending:
        return SignupOutcome(subscriber.id, False)

    record_consent(session, subscriber.id, "signup", now, request, signup.consent_version)
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
    session: Session, requests: Sequence[SignupRequest], *, default_timezone: str, confirmations_per_day: int,
    sequence: str = DEFAULT_SEQUENCE,
) -> list[SignupOutcome]:
    """``subscribe`` for several signups in one transaction, in order and by the same rules (the
    web's group commit). Addresses never seen before, nearly every signup, cost one query to
    find that out and three multi-row INSERTs for the whole group; any other address, or one
    that comes twice in the group, goes through ``subscribe`` once the new rows before it exist,
    so it sees them."""
    outcomes: list[SignupOutcome] = [SignupOutcome(None, False)] * len(requests)  # the honeypot's
    hashes = {index: hashes_to_match(session, item.signup.email)
              for index, item in enumerate(requests) if not item.signup.honeypot_filled}
    known = set(session.connection().execute(KNOWN_HASHES, {"hashes": [h for pair in hashes.values() for h in pair]})
                .scalars()) if hashes else set()
    fresh: list[int] = []
    seen: set[str] = set()

    def insert_fresh() -> None:
        ids = insert_new_signups(session, [(requests[i], hashes[i][0]) for i in fresh],
                                 default_timezone=default_timezone, sequence=sequence)
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
                                        default_timezone=default_timezone, confirmations_per_day=confirmations_per_day,
                                        sequence=sequence)
        else:
            seen.add(keyed)
            fresh.append(index)
    if fresh:
        insert_fresh()
    return outcomes


def _first_signup(
    session: Session, signup: Signup, *, now: datetime, request: RequestInfo, default_timezone: str, sequence: str
) -> SignupOutcome:
    """A new address: three plain INSERTs (no ORM unit of work); no rate check is needed, since
    nothing was ever sent to it."""
    entry = (SignupRequest(signup, request, now), stored_hash(session, signup.email))
    [subscriber_id] = insert_new_signups(session, [entry], default_timezone=default_timezone, sequence=sequence)
    return SignupOutcome(subscriber_id, True)


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
    record_consent(session, subscriber.id, "confirm", now, request, last_signup)
    emit(session, "confirmed", now=now, subscriber_id=subscriber.id, email=subscriber.email)
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
    record_consent(session, subscriber.id, "withdraw", now, request, None, scope=scope)
    outbox.cancel_pending(session, subscriber.id, _key_prefixes(subscriber), now=now)
    outbox.record_event(session, "unsubscribed", now, subscriber_id=subscriber.id, detail=scope)
    emit(session, "unsubscribed", now=now, subscriber_id=subscriber.id, email=subscriber.email, scope=scope)
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
    record_consent(session, subscriber.id, "resend-confirm", now, request, None)
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
            OutboxMessage.state == OutboxState.suppressed, OutboxMessage.sent_at.is_(None),
            not_skipped()))  # a step skipped by its condition stays decided
    outbox.replan(session, [subscriber.id])
    record_consent(session, subscriber.id, "resume", now, request, CONSENT_VERSION, scope=scope)
    outbox.record_event(session, "resubscribed", now, subscriber_id=subscriber.id, detail=scope)
    emit(session, "subscribed", now=now, subscriber_id=subscriber.id, email=subscriber.email, scope=scope)
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


def mark_status(session: Session, subscriber_id: int, status: Status, now: datetime, *,
                outbox_id: int | None = None) -> None:
    """Set a delivery-driven status (bounced, complained) and cancel what is queued. A complaint
    is also a withdrawal of consent, so it goes into the consent ledger. ``outbox_id``: the message
    the report was about, when known (for the webhook event)."""
    if status is Status.complained:
        record_consent(session, subscriber_id, "withdraw", now, RequestInfo(None, None, "complaint"), None)
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(status=status, status_changed_at=now, updated_at=now)
    )
    outbox.cancel_pending(session, subscriber_id, ALL_PREFIXES, now=now)
    emit(session, status.value, now=now, subscriber_id=subscriber_id, outbox_id=outbox_id)
