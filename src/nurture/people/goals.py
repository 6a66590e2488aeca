"""The sequence's goal: a person booked a consultation. Recording it ends their sequence.

A booking arrives from the clinic's booking system (the signed webhook), from the operator
(``nurture goal booked``) or from a file of bookings (``nurture goal import``); all three call
:func:`record_booking`, in the caller's transaction, which:

- writes one ``goals`` row, unless this booking is there already (the booking system's event id,
  or the same person at the same instant), so a retried webhook or a second import adds nothing;
- for a subscriber's first booking, ends their sequence in that same transaction: queued steps
  are cancelled (suppressed, as an unsubscribe from the series does) and they are not planned
  again (``next_due_at`` NEVER now, and the planner in ``sending.journey`` skips anyone with a
  goal however they are planned later: a resumed series, an edit of the sequence). ``wants_series``
  is left alone on purpose: it is the person's own wish, shown on their preferences page and
  changed only by them, and the consent ledger is not touched. The newsletter goes on unless they
  stopped it;
- for an address nobody subscribed with, keeps the booking unmatched: no subscriber is created,
  and instead of the address it keeps the keyed hash subscribers are found by (so the clinic can
  still ask "was this address booked?") and a masked hint (``j•••@example.com``) that lets the
  operator recognise a typo without the address being stored.

:func:`record_booking` returns the goal row it wrote: the one place a "goal" event for other
systems (outgoing webhooks) can be raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nurture.db import insert_or_not
from nurture.message_key import SEQUENCE_PREFIX
from nurture.models import NEVER, Goal, Subscriber
from nurture.people.address_hashes import find_by_email, stored_hash
from nurture.people.validation import InvalidInput
from nurture.people.webhook_events import emit
from nurture.sending import outbox

BOOKED = "booked"
SOURCES = ("webhook", "cli", "import")
MAX_EXTERNAL_ID = 128
# A booking further ahead than this is a mistake in the data (a year typed wrong), not a booking.
MAX_AHEAD = timedelta(days=366)
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Booking:
    """A booking as reported: the person's normalised address, when it was booked, how it came in."""

    email: str
    booked_at: datetime
    source: str
    external_id: str | None = None


@dataclass(frozen=True)
class GoalRecorded:
    """What :func:`record_booking` did. ``goal`` is the row (the new one, or the one that was
    there already when ``new`` is False)."""

    goal: Goal
    new: bool
    matched: bool  # the address is a subscriber's
    ended_sequence: bool  # this booking is the person's first: their sequence ended now
    cancelled: int  # queued sequence steps cancelled


def record_booking(session: Session, booking: Booking, *, now: datetime) -> GoalRecorded:
    """Record ``booking`` (idempotent) and, for a subscriber's first booking, end their sequence,
    all in the caller's transaction."""
    if booking.source not in SOURCES:
        raise ValueError(f"unknown goal source {booking.source!r}")
    check_booked_at(booking.booked_at, now=now)
    subscriber = find_by_email(session, booking.email)
    if subscriber is not None:
        # Locked like an unsubscribe locks it, so a pass planning this person waits for the goal.
        subscriber = session.get(Subscriber, subscriber.id, with_for_update=True)
    values = dict(goal=BOOKED, subscriber_id=subscriber.id if subscriber is not None else None,
                  email_hash=stored_hash(session, booking.email),
                  email_hint=None if subscriber is not None else email_hint(booking.email),
                  source=booking.source, external_id=booking.external_id, booked_at=booking.booked_at,
                  received_at=now)
    # Either unique constraint (event id; person and instant) makes a repeat a no-op, even when
    # two deliveries of one booking race.
    goal_id = session.execute(insert_or_not(session, Goal).values(**values).on_conflict_do_nothing()
                              .returning(Goal.id)).scalar_one_or_none()
    if goal_id is None:
        return GoalRecorded(_existing(session, booking, values["email_hash"]), False, subscriber is not None,
                            False, 0)
    goal = session.get(Goal, goal_id)
    if subscriber is not None:  # other systems hear of every new booking by a subscriber (webhooks out)
        emit(session, "goal", now=now, subscriber_id=subscriber.id, email=subscriber.email, goal=BOOKED)
    if subscriber is None or _earlier_goals(session, subscriber.id, goal_id):
        return GoalRecorded(goal, True, subscriber is not None, False, 0)
    return GoalRecorded(goal, True, True, True, end_sequence(session, subscriber.id, now=now))


def end_sequence(session: Session, subscriber_id: int, *, now: datetime) -> int:
    """Cancel the person's queued sequence steps and plan them no more; returns how many were
    cancelled. Steps already handed to the mail server go (as after an unsubscribe)."""
    cancelled = outbox.cancel_pending(session, subscriber_id, (SEQUENCE_PREFIX,), now=now)
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(next_due_at=NEVER))
    return cancelled


def check_booked_at(booked_at: datetime, *, now: datetime) -> None:
    """Raise InvalidInput for a booking time no booking has: naive, before 2000, or over a year ahead."""
    if booked_at.tzinfo is None:
        raise InvalidInput("booked_at", "booked_at needs a time zone offset, e.g. 2026-12-03T09:00:00-06:00 or …Z")
    if booked_at < EARLIEST or booked_at > now + MAX_AHEAD:
        raise InvalidInput("booked_at", f"booked_at {booked_at.isoformat()} is not a plausible booking time")


def parse_booked_at(text: str, *, now: datetime) -> datetime:
    """An ISO-8601 booking time with an offset (``Z`` accepted), as aware UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput("booked_at", f"booked_at is not an ISO-8601 time: {text[:40]!r}") from None
    check_booked_at(parsed, now=now)
    return parsed.astimezone(timezone.utc)


def check_external_id(value: object) -> str:
    """The booking system's event id: a string (or a number) of 1 to 128 printable characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_EXTERNAL_ID or not value.isprintable():
        raise InvalidInput("id", f"id must be a string of 1 to {MAX_EXTERNAL_ID} printable characters")
    return value.strip()


def email_hint(email: str) -> str:
    """Enough of an address to recognise it, not to write to it: the first character of the local
    part and the whole domain (a typo is usually in the domain)."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}•••@{domain}"[:80]


def reached_goal(session: Session, subscriber_id: int) -> datetime | None:
    """When this person first booked (the booking time), or None."""
    return session.scalar(select(func.min(Goal.booked_at)).where(Goal.subscriber_id == subscriber_id))


def bookings_of(session: Session, subscriber_id: int) -> list[Goal]:
    """Every booking recorded for this person, in the order received."""
    return list(session.scalars(select(Goal).where(Goal.subscriber_id == subscriber_id).order_by(Goal.id)))


@dataclass(frozen=True)
class Unmatched:
    """Bookings for addresses nobody subscribed with: how many, and the latest few."""

    total: int
    latest: list[Goal]


def unmatched(session: Session, *, limit: int = 5) -> Unmatched:
    """The unmatched bookings (for /admin)."""
    total = session.scalar(select(func.count()).select_from(Goal).where(Goal.subscriber_id.is_(None))) or 0
    latest = session.scalars(select(Goal).where(Goal.subscriber_id.is_(None))
                             .order_by(Goal.received_at.desc(), Goal.id.desc()).limit(limit)).all()
    return Unmatched(total, list(latest))


def unmatched_for(session: Session, email: str) -> list[Goal]:
    """Unmatched bookings of this (normalised) address: the search box's answer for an address
    that is nobody's subscription."""
    return list(session.scalars(select(Goal).where(Goal.subscriber_id.is_(None),
                                                   Goal.email_hash == stored_hash(session, email))
                                .order_by(Goal.id)))


def _existing(session: Session, booking: Booking, email_hash: str) -> Goal:
    if booking.external_id is not None:
        found = session.scalar(select(Goal).where(Goal.source == booking.source,
                                                  Goal.external_id == booking.external_id))
        if found is not None:
            return found
    return session.scalar(select(Goal).where(Goal.email_hash == email_hash, Goal.booked_at == booking.booked_at))


def _earlier_goals(session: Session, subscriber_id: int, goal_id: int) -> bool:
    return session.scalar(select(func.count()).select_from(Goal)
                          .where(Goal.subscriber_id == subscriber_id, Goal.id != goal_id)) > 0
