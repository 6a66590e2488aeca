"""An unsubscribe committed while a batch is being sent wins over the rest of that batch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from nurture.db import transaction
from nurture.models import OutboxMessage, OutboxState, Subscriber
from nurture.people import subscribers

from factories import REQUEST, bulk_confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


def test_unsubscribe_committed_mid_batch_stops_that_persons_email(runtime, memory_transport):
    bulk_confirmed(runtime.sessions, 100, T0 - timedelta(minutes=1))
    with runtime.sessions() as session:
        leaver = session.scalar(select(Subscriber).where(Subscriber.email == "r70@example.com"))
    committed = []

    def on_send(recipient):
        if not committed:
            # Another process (the web endpoint) commits an unsubscribe while the batch is going out.
            with transaction(runtime.sessions) as session:
                subscribers.unsubscribe(session, leaver.id, now=T0, request=REQUEST)
            committed.append(len(memory_transport.sent))

    memory_transport.on_send = on_send
    summary = runtime.sender().run_pass(T0)
    recipients = [r for _, r, _ in memory_transport.sent]
    assert committed and "r70@example.com" not in recipients
    assert summary.sent == 99 and summary.suppressed >= 1
    with runtime.sessions() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.subscriber_id == leaver.id,
                                                         OutboxMessage.key.startswith("seq:")))
    assert row.state is OutboxState.suppressed


def test_unsubscribe_before_the_claim_always_wins(runtime, memory_transport):
    bulk_confirmed(runtime.sessions, 3, T0 - timedelta(minutes=1))
    sender = runtime.sender()
    with transaction(runtime.sessions) as session:
        sender.store.planner(session, T0)  # queued, not yet claimed
        leaver = session.scalar(select(Subscriber).where(Subscriber.email == "r1@example.com"))
        subscribers.unsubscribe(session, leaver.id, now=T0, request=REQUEST)
    sender.run_pass(T0)
    assert sorted(r for _, r, _ in memory_transport.sent) == ["r0@example.com", "r2@example.com"]


def test_on_a_slow_server_a_withdrawal_stops_mail_within_about_a_second(runtime, memory_transport):
    """Each send takes 0.3 s, so a chunk of 20 takes 6 s: the rest of a chunk is checked again
    once the last check is a second old, so everyone who leaves while the chunk goes out gets
    nothing from the moment about a second after they left."""
    import time

    bulk_confirmed(runtime.sessions, 20, T0 - timedelta(minutes=1))
    left_at: dict[str, float] = {}
    sent_at: dict[str, float] = {}

    def slow(recipient):
        sent_at[recipient] = time.monotonic()
        time.sleep(0.3)
        if len(sent_at) in (2, 8):
            # Someone late in the chunk unsubscribes while it is going out.
            for i in reversed(range(20)):
                address = f"r{i}@example.com"
                if address not in sent_at and address not in left_at:
                    with transaction(runtime.sessions) as session:
                        leaver = session.scalar(select(Subscriber).where(Subscriber.email == address))
                        subscribers.unsubscribe(session, leaver.id, now=T0, request=REQUEST)
                    left_at[address] = time.monotonic()
                    break

    memory_transport.on_send = slow
    sender = runtime.sender()
    sender.settings.chunk_size = 20
    sender.run_pass(T0)
    assert len(left_at) == 2
    late = {a: sent_at[a] - left_at[a] for a in left_at if a in sent_at}
    assert all(delay < 1.5 for delay in late.values()), late  # a second, and the send in progress
