"""Several real `nurture send-due` processes on one database, and processes killed mid-run.

Exactly once in effect: two senders share the work and never duplicate it; a sender killed with
SIGKILL loses nothing, and the only duplicates are messages that were in flight at the kill,
each a copy with the same Message-ID as the first.
"""

from __future__ import annotations

import email
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from email import policy

from sqlalchemy import func, select

from conftest import SECRET, TEMPLATES
from factories import bulk_confirmed
from nurture.db import make_engine, session_factory
from nurture.models import OutboxMessage, OutboxState

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago


def send_due(tmp_path, database_url, smtp_url, now, *extra, **settings):
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_SMTP_URL": smtp_url,
           "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "NURTURE_SMTP_POOL_SIZE": "2",
           **{f"NURTURE_{k.upper()}": str(v) for k, v in settings.items()}}
    return subprocess.Popen([sys.executable, "-m", "nurture", "send-due", "--now", now.isoformat(), *extra],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def copies_by_recipient(handler):
    by = defaultdict(list)
    for received in handler.messages:
        by[received.rcpt_tos[0]].append(email.message_from_bytes(received.data, policy=policy.default)["Message-ID"])
    return by


def states(database_url):
    engine = make_engine(database_url)
    with session_factory(engine)() as session:
        result = dict(session.execute(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all())
    engine.dispose()
    return result


def test_two_senders_at_once_deliver_each_message_exactly_once(tmp_path, database_url, smtp_server):
    count = 2000
    bulk_confirmed(session_factory(make_engine(database_url)), count, T0 - timedelta(minutes=1))
    processes = [send_due(tmp_path, database_url, smtp_server.url, T0) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    by = copies_by_recipient(smtp_server.handler)
    assert len(by) == count
    assert all(len(ids) == 1 for ids in by.values())
    assert states(database_url) == {OutboxState.sent: count}
    # Both processes did part of the work.
    sent_counts = [int(out.decode().split("sent ")[1].split(",")[0]) for out, _ in outputs]
    assert sum(sent_counts) == count


def test_sigkill_at_random_moments_loses_nothing_and_repeats_only_in_flight_messages(
    tmp_path, database_url, smtp_server
):
    count = 600
    bulk_confirmed(session_factory(make_engine(database_url)), count, T0 - timedelta(minutes=1))
    smtp_server.handler.delay = 0.002  # a little latency, so kills land mid-batch
    rng = random.Random(8058)
    kills = 0
    now = T0
    lease = 2.0  # seconds of the real clock: --now moves what is due, never how long a lease lasts
    for _ in range(6):
        process = send_due(tmp_path, database_url, smtp_server.url, now, lease_seconds=lease)
        # Kill after a random number of deliveries, so every kill lands mid-run at a different point.
        target = len(smtp_server.handler.messages) + rng.randint(5, 70)
        deadline = time.monotonic() + 60
        while len(smtp_server.handler.messages) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
        time.sleep(lease + 0.2)  # the killed run's leases run out: its rows may be reclaimed
        now += timedelta(minutes=6)
    assert kills >= 5
    final = send_due(tmp_path, database_url, smtp_server.url, now + timedelta(minutes=10), lease_seconds=lease)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    by = copies_by_recipient(smtp_server.handler)
    assert len(by) == count  # nothing lost
    duplicates = {r: ids for r, ids in by.items() if len(ids) > 1}
    assert all(len(set(ids)) == 1 for ids in duplicates.values())  # a resend is the same message
    # In flight at a kill means: the chunk a connection was sending (chunk size 20, two connections).
    repeated = sum(len(ids) - 1 for ids in duplicates.values())
    print(f"SIGKILL x{kills}: {repeated} messages repeated (bound {kills * 2 * 20})")
    assert repeated <= kills * 2 * 20
    assert states(database_url) == {OutboxState.sent: count}


def test_passes_longer_than_their_lease_beside_a_fast_forwarded_pass_send_each_message_once(
    tmp_path, database_url, smtp_server
):
    """A rate limit makes each pass last several lease lengths; a second worker starts with a
    --now hours ahead, the same local day (as `send-due --now` beside the scheduler does, and as
    a scheduled pass does when the one before it outlives its lease). Leases run by the real
    clock and are renewed while a worker sends, so neither takes over what the other still sends."""
    count = 120
    bulk_confirmed(session_factory(make_engine(database_url)), count, T0 - timedelta(minutes=1))
    slow = dict(lease_seconds=1.0, rate_per_second=20)  # 120 messages at 20/s: 3 s or more, 3+ leases
    first = send_due(tmp_path, database_url, smtp_server.url, T0, **slow)
    deadline = time.monotonic() + 60
    while len(smtp_server.handler.messages) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = send_due(tmp_path, database_url, smtp_server.url, T0 + timedelta(hours=6), **slow)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    by = copies_by_recipient(smtp_server.handler)
    assert len(by) == count
    assert {r: ids for r, ids in by.items() if len(ids) > 1} == {}
    assert states(database_url) == {OutboxState.sent: count}
