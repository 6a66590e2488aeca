"""A new person's rows: the column values, and the group INSERTs of a signup."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from nurture.db import make_engine, session_factory, transaction
from nurture.models import ConsentEvent, OutboxMessage, Status, Subscriber
from nurture.people.consent_ledger import CONSENT_VERSION, RequestInfo
from nurture.people.new_subscribers import (
    CONFIRM_TEMPLATE,
    KNOWN_HASHES,
    SignupRequest,
    insert_new_signups,
    new_subscriber_values,
)
from nurture.people.validation import Signup

T0 = datetime(2026, 12, 1, 15, tzinfo=timezone.utc)
REQUEST = RequestInfo("192.0.2.1", "unit", "json-api")


@pytest.fixture
def db(sqlite_url):
    engine = make_engine(sqlite_url)
    yield session_factory(engine)
    engine.dispose()


def test_the_values_of_a_new_subscriber(db) -> None:
    with db() as session:
        values = new_subscriber_values(session, Signup("ann@example.com", "Ann", None, None, False),
                                       status=Status.confirmed, now=T0, default_timezone="Europe/Paris",
                                       sequence="winter", confirm_round=0, stored="given-hash")
    assert values["email_hash"] == "given-hash" and values["timezone"] == "Europe/Paris"
    assert values["sequence"] == "winter" and values["confirmed_at"] == T0 and values["tags"] == []
    assert values["wants_series"] and values["wants_newsletter"]


def test_a_group_of_new_signups_gets_rows_ledger_and_first_confirmations_in_order(db) -> None:
    people = [Signup(f"p{i}@example.com", None, "UTC", CONSENT_VERSION, False) for i in range(3)]
    with transaction(db) as session:
        entries = [(SignupRequest(p, REQUEST, T0), f"hash-{i}") for i, p in enumerate(people)]
        ids = insert_new_signups(session, entries, default_timezone="UTC", sequence="nurture")
        assert set(session.scalars(KNOWN_HASHES, {"hashes": ["hash-0", "hash-2", "other"]})) == {"hash-0", "hash-2"}
    with db() as session:
        assert [session.get(Subscriber, i).email for i in ids] == [p.email for p in people]
        assert {session.get(Subscriber, i).status for i in ids} == {Status.pending}
        assert session.scalar(select(func.count()).select_from(ConsentEvent).where(ConsentEvent.kind == "signup")) == 3
        rows = session.execute(select(OutboxMessage.subscriber_id, OutboxMessage.key, OutboxMessage.template)).all()
        assert sorted(rows) == sorted((i, "sys:confirm:1", CONFIRM_TEMPLATE) for i in ids)
