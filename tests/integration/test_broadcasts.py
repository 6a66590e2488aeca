"""Newsletter broadcasts through the one outbox: right audience, once, resumable, day-aware."""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email import policy
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from nurture.clock import utcnow
from nurture.content.sequences import load_newsletters
from nurture.db import transaction
from nurture.models import OutboxMessage, OutboxState, Subscriber
from nurture.people import subscribers
from nurture.runtime import Runtime
from nurture.sending import broadcasts
from nurture.sending.journey import Planner
from nurture.sending.transports import Reply

from conftest import make_settings
from factories import REQUEST, bulk_confirmed, confirmed

CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago
ISSUE = "2026-12-winter"


def create(rt, audience="all", at=T0 + timedelta(days=20), now=T0 + timedelta(days=20)):
    planner = Planner.from_settings(rt.settings)
    newsletter = load_newsletters(rt.settings.templates_dir)[ISSUE]
    with transaction(rt.sessions) as session:
        return broadcasts.create(session, newsletter=newsletter, audience=audience, send_at=at, now=now,
                                 sequence=planner.sequence(), window=planner.window).id


def received(transport):
    return sorted(recipient for _, recipient, _ in transport.sent)


def newsletter_recipients(transport):
    return sorted(r for _, r, data in transport.sent
                  if "Winter" in email.message_from_bytes(data, policy=policy.default)["Subject"]
                  or "winter" in email.message_from_bytes(data, policy=policy.default)["Subject"])


@pytest.fixture
def people(runtime):
    ids = {name: confirmed(runtime.sessions, f"{name}@example.com", T0) for name in ("ann", "bob", "cat", "dan")}
    with transaction(runtime.sessions) as session:
        subscribers.unsubscribe(session, ids["bob"], scope="newsletter", now=T0, request=REQUEST)
        subscribers.unsubscribe(session, ids["cat"], scope="all", now=T0, request=REQUEST)
    return ids


def test_goes_once_to_the_right_audience_and_a_second_send_sends_nothing(runtime, memory_transport, people):
    later = T0 + timedelta(days=20)
    broadcast_id = create(runtime)
    sender = runtime.sender()
    first = sender.run_pass(later, key_prefix=f"bcast:{broadcast_id}")
    assert received(memory_transport) == ["ann@example.com", "dan@example.com"]
    assert first.sent == 2
    again = sender.run_pass(later + timedelta(hours=1), key_prefix=f"bcast:{broadcast_id}")
    assert again.sent == 0 and len(memory_transport.sent) == 2
    with runtime.sessions() as session:
        [status] = broadcasts.list_broadcasts(session)
    assert status.state == "sent" and status.counts == {"sent": 2}


def test_a_crash_midway_resumes_without_resending(runtime, memory_transport):
    for i in range(30):
        confirmed(runtime.sessions, f"p{i}@example.com", T0)
    broadcast_id = create(runtime)
    later = T0 + timedelta(days=20)
    sender = runtime.sender()
    sender.settings.chunk_size = 5
    delivered = []

    def crash_after_twelve(recipient):
        if len(delivered) == 12:
            raise KeyboardInterrupt  # the process dies mid-batch
        delivered.append(recipient)

    memory_transport.on_send = crash_after_twelve
    with pytest.raises(KeyboardInterrupt):
        sender.run_pass(later, key_prefix=f"bcast:{broadcast_id}")
    memory_transport.on_send = None
    # The message in flight at the crash stays leased until its lease runs out by the real clock.
    restarted = runtime.sender()
    restarted.clock = lambda: utcnow() + restarted.settings.lease + timedelta(seconds=1)
    restarted.run_pass(later + timedelta(minutes=10), key_prefix=f"bcast:{broadcast_id}")
    recipients = received(memory_transport)
    assert len(set(recipients)) == 30
    assert len(recipients) - 30 <= 5  # at most the chunk in flight went twice


def test_people_who_join_later_are_included_only_when_asked(runtime, memory_transport, people):
    broadcast_id = create(runtime, at=T0 + timedelta(days=25), now=T0 + timedelta(days=20))
    confirmed(runtime.sessions, "late@example.com", T0 + timedelta(days=21))
    planner = Planner.from_settings(runtime.settings)
    at = T0 + timedelta(days=25)
    runtime.sender().run_pass(at, key_prefix=f"bcast:{broadcast_id}")
    assert "late@example.com" not in received(memory_transport)
    with transaction(runtime.sessions) as session:
        added = broadcasts.include_new(session, broadcast_id, now=at, sequence=planner.sequence(),
                                       window=planner.window)
    assert added == 1


def test_never_on_the_same_local_day_as_a_sequence_email(runtime, memory_transport):
    confirmed(runtime.sessions, "new@example.com", T0)  # gets the welcome at 09:00 on day 0
    runtime.sender().run_pass(T0)
    broadcast_id = create(runtime, at=T0 + timedelta(hours=3), now=T0 + timedelta(hours=3))
    with runtime.sessions() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.key == f"bcast:{broadcast_id}"))
    local = row.due_at.astimezone(CHICAGO)
    assert (local.date(), local.hour) == ((T0.astimezone(CHICAGO) + timedelta(days=1)).date(), 9)


def test_a_queued_newsletter_holds_back_that_days_sequence_step(runtime, memory_transport):
    confirmed(runtime.sessions, "reader@example.com", T0)
    sender = runtime.sender()
    sender.run_pass(T0)  # welcome on day 0; step 2 falls due on day 2 at 09:00
    day2 = T0 + timedelta(days=2)
    broadcast_id = create(runtime, at=day2 + timedelta(hours=4), now=T0 + timedelta(days=1))
    sender.run_pass(day2)
    subjects = [email.message_from_bytes(d, policy=policy.default)["Subject"] for _, _, d in memory_transport.sent]
    assert len(subjects) == 1  # the sequence step waited
    sender.run_pass(day2 + timedelta(hours=4))
    assert len(memory_transport.sent) == 2  # the newsletter went that afternoon
    sender.run_pass(day2 + timedelta(days=1))
    assert len(memory_transport.sent) == 3  # and the step the next morning
    with runtime.sessions() as session:
        assert session.scalar(select(OutboxMessage.state).where(OutboxMessage.key == f"bcast:{broadcast_id}")) \
            is OutboxState.sent


def test_cancel_stops_what_has_not_gone(runtime, memory_transport, people):
    broadcast_id = create(runtime)
    with transaction(runtime.sessions) as session:
        assert broadcasts.cancel(session, broadcast_id) == 2
    runtime.sender().run_pass(T0 + timedelta(days=21), key_prefix=f"bcast:{broadcast_id}")
    assert memory_transport.sent == []
    with pytest.raises(broadcasts.BroadcastError, match="cancelled"), transaction(runtime.sessions) as session:
        broadcasts.send_now(session, broadcast_id, now=T0, window=Planner.from_settings(runtime.settings).window)


def test_audiences_finished_and_tag(runtime, memory_transport):
    done = confirmed(runtime.sessions, "done@example.com", T0)
    confirmed(runtime.sessions, "fresh@example.com", T0 + timedelta(days=19))
    sender = runtime.sender()
    for day in range(12):
        sender.run_pass(T0 + timedelta(days=day))
    with transaction(runtime.sessions) as session:
        session.get(Subscriber, done).tags = ["clinic-patient"]
    finished = create(runtime, audience="finished")
    tagged = create(runtime, audience="tag:clinic-patient")
    with runtime.sessions() as session:
        listed = {row.broadcast.id: row.broadcast.recipients for row in broadcasts.list_broadcasts(session)}
    assert listed == {finished: 1, tagged: 1}
    with pytest.raises(broadcasts.BroadcastError, match="unknown audience"):
        broadcasts.parse_audience("everyone")


def test_broadcast_crosses_a_real_smtp_server(tmp_path, database_url, smtp_server):
    rt = Runtime(make_settings(tmp_path, database_url, smtp_url=smtp_server.url))
    for name in ("ann", "bob"):
        confirmed(rt.sessions, f"{name}@example.com", T0)
    broadcast_id = create(rt)
    summary = rt.sender().run_pass(T0 + timedelta(days=20), key_prefix=f"bcast:{broadcast_id}")
    rt.close()
    assert summary.sent == 2
    messages = [email.message_from_bytes(m.data, policy=policy.default) for m in smtp_server.handler.messages]
    assert sorted(m["To"] for m in messages) == ["ann@example.com", "bob@example.com"]
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in messages)


def test_bounce_storm_trips_the_circuit_breaker(runtime, memory_transport):
    from nurture.sending.pass_summary import CircuitOpen

    bulk_confirmed(runtime.sessions, 400, T0 - timedelta(minutes=1))
    memory_transport.replies = [Reply(550, "5.1.1 no such user")] * 10 + [Reply(250, "ok")] * 390
    sender = runtime.sender()
    with pytest.raises(CircuitOpen, match="bounced"):
        sender.run_pass(T0)
    with runtime.sessions() as session:
        states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.key.startswith("seq:"))).all()
    assert OutboxState.sending not in states  # claims were released
    assert states.count(OutboxState.queued) > 0
