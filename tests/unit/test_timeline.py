"""One subscriber's story (nurture.timeline): what was sent, what comes next and when, or why
nothing will. On a real SQLite file with the shipped templates' sequence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from nurture.db import transaction
from nurture.feedback.timeline import build_timeline
from nurture.models import OutboxMessage, OutboxState
from nurture.people import subscribers
from nurture.people.consent_ledger import RequestInfo
from nurture.people.new_subscribers import add_confirmed
from nurture.people.validation import Signup
from nurture.sending import outbox
from nurture.sending.journey import Planner

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 10:00 in New York
STEPS = ("welcome-history", "how-it-may-work", "risks-side-effects", "consultation-invite", "invite-reminder")
WHO = RequestInfo("203.0.113.9", "test", "signup-form")


@pytest.fixture
def runtime(sqlite_runtime):
    return sqlite_runtime


def confirmed(runtime, email="reader@example.com") -> int:
    with transaction(runtime.sessions) as session:
        [person] = add_confirmed(session, [Signup(email, "Ann", "America/New_York", None, False)], now=T0,
                                 source="paper form", default_timezone="UTC")
    return person


def queue(runtime, person, key, *, due=T0, state=OutboxState.queued, sent_at=None):
    with transaction(runtime.sessions) as session:
        outbox.enqueue(session, subscriber_id=person, key=key, template="nurture/x.html.j2", due_at=due, now=T0)
        session.execute(update(OutboxMessage).where(OutboxMessage.key == key, OutboxMessage.subscriber_id == person)
                        .values(state=state, sent_at=sent_at))


def timeline(runtime, email="reader@example.com", now=T0 + timedelta(hours=1)):
    s = runtime.settings
    with runtime.sessions() as session:
        return build_timeline(session, email, now=now, planner=Planner.from_settings(s), secret=s.secret,
                              from_header=s.mail_from)


def test_an_unknown_address_has_no_timeline(runtime):
    assert timeline(runtime, "nobody@example.com") is None


def test_a_pending_person_waits_for_their_confirmation(runtime):
    with transaction(runtime.sessions) as session:
        subscribers.subscribe(session, Signup("reader@example.com", None, None, None, False), now=T0, request=WHO,
                              default_timezone="Europe/London", confirmations_per_day=5)
    story = timeline(runtime)
    assert (story.status, story.timezone, story.next_step) == ("pending", "Europe/London", None)
    assert story.why_nothing.startswith("they have not confirmed their address yet")
    assert [e.what for e in story.entries] == ["consent signup", "sys:confirm:1 · queued"]
    assert story.entries[0].detail == "via signup-form from 203.0.113.9"
    assert story.entries[1].detail.startswith("<") and story.entries[1].detail.endswith(">")  # the Message-ID


def test_a_new_confirmed_person_gets_the_first_step_now(runtime):
    confirmed(runtime)
    now = T0 + timedelta(minutes=5)
    story = timeline(runtime, now=now)
    assert (story.next_step, story.next_at, story.why_nothing) == (STEPS[0], now, None)
    assert story.local(story.next_at).hour == 10


def test_what_is_queued_comes_next_at_its_own_time(runtime):
    person = confirmed(runtime)
    queue(runtime, person, f"seq:nurture:{STEPS[0]}", state=OutboxState.sent, sent_at=T0)
    later = T0 + timedelta(days=2)
    queue(runtime, person, "bcast:5", due=later)
    story = timeline(runtime)
    assert (story.next_step, story.next_at) == ("newsletter (broadcast 5)", later)
    assert [e.what for e in story.entries][-2:] == [f"seq:nurture:{STEPS[0]} · sent", "bcast:5 · queued"]


def test_the_next_step_follows_the_sequence_rules_in_the_persons_zone(runtime):
    person = confirmed(runtime)
    queue(runtime, person, f"seq:nurture:{STEPS[0]}", state=OutboxState.sent, sent_at=T0)
    story = timeline(runtime)
    assert story.next_step == STEPS[1]
    assert story.local(story.next_at).strftime("%H:%M") == "09:00" and story.next_at > T0 + timedelta(days=1)


def test_a_person_who_had_every_step_has_finished(runtime):
    person = confirmed(runtime)
    for n, step in enumerate(STEPS):
        queue(runtime, person, f"seq:nurture:{step}", state=OutboxState.sent, sent_at=T0 - timedelta(days=10 - n))
    assert timeline(runtime).why_nothing == "finished the sequence; receives the newsletter"


def test_stopping_the_series_or_everything_is_why_nothing_comes(runtime):
    person = confirmed(runtime)
    with transaction(runtime.sessions) as session:
        subscribers.unsubscribe(session, person, scope="series", now=T0, request=WHO)
    assert timeline(runtime).why_nothing == "stopped the series (still receives the newsletter)"
    with transaction(runtime.sessions) as session:
        subscribers.unsubscribe(session, person, scope="all", now=T0 + timedelta(minutes=1), request=WHO)
    story = timeline(runtime)
    assert story.status == "unsubscribed" and story.why_nothing.startswith("unsubscribed on 2026-12-01 15:01")
    assert "consent withdraw (series)" in [e.what for e in story.entries]


def test_clicks_are_shown_with_the_message_they_came_from(runtime):
    person = confirmed(runtime)
    queue(runtime, person, f"seq:nurture:{STEPS[0]}", state=OutboxState.sent, sent_at=T0)
    with transaction(runtime.sessions) as session:
        row = session.query(OutboxMessage).one()
        outbox.record_event(session, "clicked", T0 + timedelta(minutes=3), subscriber_id=person, outbox_id=row.id,
                            detail="https://clinic.example/consultation")
    entry = timeline(runtime).entries[-1]
    assert (entry.what, entry.detail) == (f"clicked · seq:nurture:{STEPS[0]}", "https://clinic.example/consultation")
