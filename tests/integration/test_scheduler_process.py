"""`nurture scheduler` as a real process: it sends what is due, and SIGTERM stops it gracefully
(the message in flight finishes, nothing is left claimed, nothing is lost or doubled)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from conftest import SECRET, TEMPLATES
from factories import bulk_confirmed
from nurture.db import make_engine, session_factory
from nurture.models import OutboxMessage, OutboxState


def test_sigterm_finishes_the_message_in_flight_and_releases_the_rest(tmp_path, database_url, smtp_server):
    sessions = session_factory(make_engine(database_url))
    bulk_confirmed(sessions, 300, datetime.now(timezone.utc) - timedelta(minutes=1))
    smtp_server.handler.delay = 0.01
    env = {**os.environ, "NURTURE_DATABASE_URL": database_url, "NURTURE_SMTP_URL": smtp_server.url,
           "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "NURTURE_SMTP_POOL_SIZE": "2"}
    process = subprocess.Popen([sys.executable, "-m", "nurture", "scheduler"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(smtp_server.handler.messages) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, err
    assert "stopping (signal 15)" in err
    assert_stopped_mid_pass(sessions, smtp_server)


def assert_stopped_mid_pass(sessions, smtp_server, due: int = 300) -> None:
    """A pass of ``due`` sequence emails stopped by SIGTERM: some went, each once, the rest are
    queued again, and nothing is left claimed."""
    with sessions() as session:
        states = Counter(dict(session.execute(
            select(OutboxMessage.state, func.count())
            .where(OutboxMessage.key.startswith("seq:")).group_by(OutboxMessage.state)).all()))
    received = Counter(m.rcpt_tos[0] for m in smtp_server.handler.messages)
    assert states[OutboxState.sending] == 0  # nothing left claimed
    assert 0 < states[OutboxState.sent] < due and states[OutboxState.queued] == due - states[OutboxState.sent]
    assert len(received) == states[OutboxState.sent] and max(received.values()) == 1
