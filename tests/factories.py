"""Small builders for test data, through the same rules the app uses."""

from __future__ import annotations

from datetime import datetime, timedelta

from nurture.db import transaction
from nurture.models import Status, Subscriber
from nurture.people import subscribers
from nurture.people.consent_ledger import RequestInfo
from nurture.people.validation import Signup, normalise_email

REQUEST = RequestInfo(ip="192.0.2.1", user_agent="tests", source="tests")


class Clock:
    """A clock to pass to ``create_app(clock=...)``: it says ``now`` until a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def confirmed(sessions, address: str, at: datetime, zone: str = "America/Chicago") -> int:
    """A subscriber who signed up and confirmed at ``at``; returns their id."""
    with transaction(sessions) as session:
        outcome = subscribers.subscribe(
            session, Signup(normalise_email(address), None, zone, None, False), now=at, request=REQUEST,
            default_timezone=zone, confirmations_per_day=3,
        )
        subscribers.confirm(session, outcome.subscriber_id, 1, now=at, request=REQUEST)
        return outcome.subscriber_id


def bulk_confirmed(sessions, count: int, at: datetime, zone: str = "America/Chicago", prefix: str = "r") -> None:
    """Many confirmed subscribers at once (no confirmation emails queued), for load tests."""
    from nurture.people.address_hashes import stored_hash

    with transaction(sessions) as session:
        session.execute(
            Subscriber.__table__.insert(),
            [
                dict(email=f"{prefix}{i}@example.com", email_hash=stored_hash(session, f"{prefix}{i}@example.com"),
                     first_name=f"N{i}", timezone=zone, status=Status.confirmed, wants_series=True,
                     wants_newsletter=True, sequence="nurture", tags=[], created_at=at, updated_at=at,
                     confirmed_at=at, status_changed_at=at, confirm_round=1)
                for i in range(count)
            ],
        )


def subscriber(sessions, email: str, at: datetime, *, status: Status = Status.confirmed, series: bool = True,
               newsletter: bool = True) -> int:
    """One subscriber row as it stands (any status and wishes), nothing queued and nothing to plan
    for a month; returns its id. For tests of the outbox and the sender's store."""
    from nurture.people.address_hashes import stored_hash

    with transaction(sessions) as session:
        return session.execute(Subscriber.__table__.insert().returning(Subscriber.id), dict(
            email=email, email_hash=stored_hash(session, email), first_name="Ann", timezone="Europe/Paris",
            status=status, wants_series=series, wants_newsletter=newsletter, sequence="nurture", tags=[],
            created_at=at, updated_at=at, confirmed_at=at, status_changed_at=at, confirm_round=1,
            next_due_at=at + timedelta(days=30))).scalar_one()
