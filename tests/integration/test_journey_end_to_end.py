"""A whole journey with a frozen clock across a daylight-saving change: confirmation, then every
step on its own local day at the send hour, nothing twice. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import email
from collections import Counter
from datetime import datetime, timedelta, timezone
from email import policy
from zoneinfo import ZoneInfo

from sqlalchemy import select

from nurture.content.sequences import load_sequences
from nurture.models import OutboxMessage, OutboxState

from factories import confirmed

UTC = timezone.utc


def test_full_journey_across_the_end_of_daylight_saving(runtime, memory_transport):
    sequence = load_sequences(runtime.settings.templates_dir)["nurture"]
    people = {"ny@example.com": ZoneInfo("America/New_York"), "berlin@example.com": ZoneInfo("Europe/Berlin"),
              "tokyo@example.com": ZoneInfo("Asia/Tokyo")}
    # US clocks go back on 2026-11-01; Berlin's went back on 2026-10-25; Tokyo has no DST.
    start = datetime(2026, 10, 30, 23, 45, tzinfo=UTC)  # passes every 15 minutes land on :00
    confirmed_at = {}
    for address, zone in people.items():
        confirmed_at[address] = start
        confirmed(runtime.sessions, address, start, zone.key)

    sender = runtime.sender()
    arrivals: dict[str, list[tuple[str, datetime]]] = {a: [] for a in people}
    now = start
    while now < start + timedelta(days=max(s.delay_days for s in sequence.steps) + 3):
        before = len(memory_transport.sent)
        sender.run_pass(now)
        for _sender, recipient, data in memory_transport.sent[before:]:
            arrivals[recipient].append((email.message_from_bytes(data, policy=policy.default)["Subject"], now))
        now += timedelta(minutes=15)

    subjects = [step.subject for step in sequence.steps]
    for address, zone in people.items():
        got = arrivals[address]
        assert [subject for subject, _ in got] == subjects, address  # every step, in order, once
        first_at = got[0][1]
        assert first_at == start  # the welcome goes at once
        local_days = [at.astimezone(zone).date() for _, at in got]
        assert len(set(local_days)) == len(local_days)  # never two on one local day
        for step, (_, at) in zip(sequence.steps[1:], got[1:]):
            local = at.astimezone(zone)
            expected_day = confirmed_at[address].astimezone(zone).date() + timedelta(days=step.delay_days)
            assert local.date() == expected_day, (address, step.key)
            assert (local.hour, local.minute) == (9, 0), (address, step.key, local)

    with runtime.sessions() as session:
        states = Counter(session.scalars(select(OutboxMessage.state).where(OutboxMessage.key.startswith("seq:"))))
    assert states == {OutboxState.sent: len(people) * len(sequence.steps)}
