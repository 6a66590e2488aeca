"""people.goals on a real SQLite file: a booking recorded once, the sequence ended for a person's
first booking only, an unknown address kept unmatched without its text, booking times checked."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from nurture.db import transaction
from nurture.models import NEVER, Goal, OutboxMessage, OutboxState, Subscriber
from nurture.people.goals import (
    Booking,
    check_external_id,
    email_hint,
    parse_booked_at,
    reached_goal,
    record_booking,
    unmatched,
)
from nurture.people.validation import InvalidInput
from nurture.sending import outbox

from factories import confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def sessions(sqlite_runtime):
    return sqlite_runtime.sessions


def book(sessions, email, at=T0, source="cli", external_id=None, now=T0):
    with transaction(sessions) as session:
        return record_booking(session, Booking(email, at, source, external_id), now=now)


def test_a_first_booking_cancels_queued_steps_only_and_plans_nothing_more(sessions):
    sid = confirmed(sessions, "ann@example.com", T0 - timedelta(days=2))
    with transaction(sessions) as session:
        for key in ("seq:nurture:how-it-may-work", "bcast:1", "seq:other:x"):
            outbox.enqueue(session, subscriber_id=sid, key=key, template="t", due_at=T0, now=T0)
    done = book(sessions, "ann@example.com", external_id="e1", source="webhook")
    assert (done.new, done.matched, done.ended_sequence, done.cancelled) == (True, True, True, 2)
    assert done.goal.subscriber_id == sid and done.goal.goal == "booked"
    with sessions() as session:
        states = dict(session.execute(select(OutboxMessage.key, OutboxMessage.state)
                                      .where(OutboxMessage.subscriber_id == sid)).all())
        assert states == {"seq:nurture:how-it-may-work": OutboxState.suppressed, "bcast:1": OutboxState.queued,
                          "seq:other:x": OutboxState.suppressed, "sys:confirm:1": OutboxState.queued}
        assert session.get(Subscriber, sid).next_due_at == NEVER
        assert reached_goal(session, sid) == T0

    later = book(sessions, "ann@example.com", at=T0 + timedelta(days=1), now=T0 + timedelta(days=1))
    assert (later.new, later.ended_sequence, later.cancelled) == (True, False, 0)


def test_the_same_booking_is_recorded_once_by_event_id_or_by_person_and_time(sessions):
    confirmed(sessions, "ann@example.com", T0)
    first = book(sessions, "ann@example.com", source="webhook", external_id="e1")
    by_id = book(sessions, "ann@example.com", at=T0 + timedelta(hours=1), source="webhook", external_id="e1")
    by_time = book(sessions, "ann@example.com", source="import")
    assert (by_id.new, by_time.new) == (False, False)
    assert by_id.goal.id == by_time.goal.id == first.goal.id
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Goal)) == 1


def test_an_unknown_address_is_unmatched_keeps_no_address_and_creates_nobody(sessions):
    done = book(sessions, "zoë@bücher.example")
    assert (done.new, done.matched, done.ended_sequence) == (True, False, False)
    assert done.goal.subscriber_id is None and done.goal.email_hint == "z•••@bücher.example"
    assert "zoë" not in done.goal.email_hash and len(done.goal.email_hash) == 64
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        found = unmatched(session)
        assert found.total == 1 and [g.id for g in found.latest] == [done.goal.id]


def test_email_hint():
    assert email_hint("jane.doe@example.com") == "j•••@example.com"
    assert email_hint("x@y.example") == "x•••@y.example"


@pytest.mark.parametrize("text, says", [
    ("2026-12-01T09:00:00", "offset"),
    ("yesterday", "ISO-8601"),
    ("1999-12-31T23:00:00Z", "plausible"),
    ("2028-12-01T09:00:00Z", "plausible"),
])
def test_booking_times_that_are_refused(text, says):
    with pytest.raises(InvalidInput, match=says):
        parse_booked_at(text, now=T0)


def test_booking_times_are_read_as_utc():
    assert parse_booked_at("2026-12-01T09:00:00-06:00", now=T0) == T0
    assert parse_booked_at("2026-12-01T15:00:00Z", now=T0) == T0


@pytest.mark.parametrize("value, ok", [("bk_1", True), (42, True), ("", False), (True, False), (None, False),
                                       ("x" * 129, False), ("a\nb", False)])
def test_external_ids(value, ok):
    if ok:
        assert check_external_id(value) == str(value)
    else:
        with pytest.raises(InvalidInput):
            check_external_id(value)


def test_an_unknown_source_is_a_programming_error(sessions):
    with pytest.raises(ValueError):
        book(sessions, "ann@example.com", source="carrier-pigeon")


def test_a_persons_bookings_are_in_their_personal_data_export(sessions):
    from nurture.people.data_rights import export_personal

    confirmed(sessions, "ann@example.com", T0)
    book(sessions, "ann@example.com", source="webhook", external_id="bk_7")
    with sessions() as session:
        assert export_personal(session, "ann@example.com")["bookings"] == [
            {"goal": "booked", "booked_at": "2026-12-01T15:00:00+00:00", "received_at": "2026-12-01T15:00:00+00:00",
             "source": "webhook", "external_id": "bk_7"}]
