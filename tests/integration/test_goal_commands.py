"""`nurture goal booked` and `nurture goal import` as an operator runs them: a real process, on a
SQLite file and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from nurture.db import make_engine, session_factory, transaction
from nurture.models import NEVER, ConsentEvent, Goal, OutboxMessage, OutboxState, Subscriber
from nurture.sending.journey import Planner

from conftest import SECRET, TEMPLATES, make_settings
from factories import confirmed

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def nurture(tmp_path, database_url, *args, code=0):
    environ = {**os.environ, "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
               "NURTURE_DATABASE_URL": database_url, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "nurture", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    return done


def test_goal_booked_ends_the_sequence_and_says_so(tmp_path, database_url, sessions):
    sid = confirmed(sessions, "ann@example.com", NOW - timedelta(days=3))
    with transaction(sessions) as session:
        Planner.from_settings(make_settings(tmp_path, database_url))(session, NOW)  # the welcome, queued
    def ledger():
        with sessions() as session:
            return session.scalar(select(func.count()).select_from(ConsentEvent))

    before = ledger()

    done = nurture(tmp_path, database_url, "goal", "booked", "Ann@Example.com", "--at", "2026-11-30T10:00:00-06:00")
    assert "ann@example.com: booked 2026-11-30 16:00 UTC; their sequence ended (1 queued step(s) cancelled)" \
        in done.stdout
    again = nurture(tmp_path, database_url, "goal", "booked", "ann@example.com", "--at", "2026-11-30T16:00:00Z")
    assert "was recorded already; nothing changed" in again.stdout
    stranger = nurture(tmp_path, database_url, "goal", "booked", "zed@example.org")
    assert "no subscriber has this address" in stranger.stdout

    with sessions() as session:
        rows = session.execute(select(Goal.subscriber_id, Goal.source, Goal.email_hint).order_by(Goal.id)).all()
        assert rows == [(sid, "cli", None), (None, "cli", "z•••@example.org")]
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 1
        assert session.get(Subscriber, sid).next_due_at == NEVER
        assert set(session.scalars(select(OutboxMessage.state).where(OutboxMessage.subscriber_id == sid,
                                                                     OutboxMessage.key.startswith("seq:")))) \
            == {OutboxState.suppressed}
    assert ledger() == before


@pytest.mark.parametrize("args, says", [
    (("goal", "booked", "not-an-address"), "look like an email"),
    (("goal", "booked", "ann@example.com", "--at", "tomorrowish"), "--at: not a time"),
    (("goal", "booked", "ann@example.com", "--at", "1999-01-01T00:00:00Z"), "not a plausible booking time"),
    (("goal", "import", "missing.csv"), "Cannot read"),
])
def test_bad_input_is_one_line(tmp_path, database_url, args, says):
    done = nurture(tmp_path, database_url, *args, code=1)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr


def test_goal_import_reports_bad_rows_by_line_and_a_second_import_changes_nothing(tmp_path, database_url, sessions):
    ann = confirmed(sessions, "ann@example.com", NOW - timedelta(days=3))
    bob = confirmed(sessions, "bob@example.com", NOW - timedelta(days=3))
    (tmp_path / "bookings.csv").write_text(
        "\ufeffEmail,booked_at\n"
        "ann@example.com,2026-11-30T10:00:00-06:00\n"
        "not an address,2026-11-30T10:00:00Z\n"
        "bob@example.com,\n"
        "\n"
        "BOB@example.com,2026-11-29T09:00:00Z\n"
        "cat@example.net,2026-11-29T09:30:00Z\n"
        "ann@example.com,2026-11-30T16:00:00Z\n"  # the same booking as line 2, written in UTC
        "dan@example.com,next tuesday\n"
        "eve@example.com,2026-11-29T09:30:00\n", encoding="utf-8")
    first = nurture(tmp_path, database_url, "goal", "import", "bookings.csv")
    assert "line 3: not an address:" in first.stderr
    assert "line 4: bob@example.com: booked_at is empty" in first.stderr
    assert "line 9: dan@example.com: booked_at is not an ISO-8601 time" in first.stderr
    assert "line 10: eve@example.com: booked_at needs a time zone offset" in first.stderr
    assert ("Imported 3 new bookings: 2 of subscribers (2 of them ended a sequence), 1 unmatched (no subscriber "
            "has the address); 1 already recorded, 4 rejected.") in first.stdout

    with sessions() as session:
        before = session.execute(select(Goal.id, Goal.subscriber_id, Goal.booked_at).order_by(Goal.id)).all()
    second = nurture(tmp_path, database_url, "goal", "import", "bookings.csv")
    assert "Imported 0 new bookings" in second.stdout and "4 already recorded, 4 rejected" in second.stdout
    with sessions() as session:
        assert session.execute(select(Goal.id, Goal.subscriber_id, Goal.booked_at).order_by(Goal.id)).all() == before
        assert [sid for _, sid, _ in before] == [ann, bob, None]
        assert {g.source for g in session.scalars(select(Goal))} == {"import"}
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 2


def test_goal_import_refuses_a_file_without_the_columns(tmp_path, database_url):
    (tmp_path / "wrong.csv").write_text("address,when\nann@example.com,2026-11-30T10:00:00Z\n")
    done = nurture(tmp_path, database_url, "goal", "import", "wrong.csv", code=1)
    assert "must name the columns email, booked_at (missing: email, booked_at)" in done.stderr
