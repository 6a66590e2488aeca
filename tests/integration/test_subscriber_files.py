"""CSV import and export against SQLite and PostgreSQL: double opt-in or vouched-for consent,
no resurrection of suppressed addresses, idempotent re-runs, dry runs, whole batches."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from nurture.db import make_engine, session_factory, transaction
from nurture.models import ConsentEvent, Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.people import data_rights, subscribers
from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS
from nurture.people.subscriber_files import EXPORT_COLUMNS, export_csv, import_csv

from factories import REQUEST, bulk_confirmed, confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
ZONE = "America/Chicago"
PAPER = "paper form at the clinic, 2026-10"

# What a front desk's spreadsheet looks like: Excel's BOM and CRLF, a name with a comma, a name
# pasted with a line break, gaps, and the usual mistakes.
CLINIC_LIST = (
    "\ufeffemail,first_name,timezone,consent\r\n"
    "maria.gonzalez@example.com,María,America/Denver,yes\r\n"  # 2
    "TOM.NGUYEN@Example.com,Tom,,TRUE\r\n"  # 3
    'dee@example.com,"Dee, Jr.",,1\r\n'  # 4
    "sam at example.com,Sam,,yes\r\n"  # 5: bad address
    'kim@example.com,"Kim\r\nBcc: all@example.com",,yes\r\n'  # 6-7: line break in the name
    "lee@example.com,Lee,,\r\n"  # 8: no consent
    "pat@example.com,Pat,Europe/Atlantis,yes\r\n"  # 9: unknown time zone
    "tom.nguyen@example.com,Tommy,,yes\r\n"  # 10: duplicate of line 3
    f"long@example.com,{'L' * 120},,yes\r\n"  # 11: over-long name
    "\r\n"
    "ola@example.com,,Europe/Oslo,on\r\n"  # 13
)
GOOD = ["maria.gonzalez@example.com", "tom.nguyen@example.com", "dee@example.com", "ola@example.com"]


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def clinic_list(tmp_path):
    path = tmp_path / "front-desk.csv"
    path.write_bytes(CLINIC_LIST.encode())
    return path


def run(sessions, source, **options):
    options = {"now": T0, "default_timezone": ZONE, **options}
    return import_csv(sessions, source, **options)


def table_counts(sessions) -> dict[str, int]:
    with sessions() as session:
        return {name: session.scalar(text(f"SELECT count(*) FROM {name}"))
                for name in ("subscribers", "consent_events", "outbox", "events")}


def test_a_realistic_list_is_imported_by_double_opt_in(sessions, clinic_list):
    report = run(sessions, clinic_list)
    assert (report.created, report.existing, report.suppressed, report.confirmations_queued) == (4, 0, 0, 4)
    assert [(r.line, r.email) for r in report.rejected] == [
        (5, "sam at example.com"), (6, "kim@example.com"), (8, "lee@example.com"), (9, "pat@example.com"),
        (10, "tom.nguyen@example.com"), (11, "long@example.com"),
    ]
    reasons = [r.reason for r in report.rejected]
    assert "look like an email address" in reasons[0] and "line break" in reasons[1]
    assert reasons[2] == "no consent: the consent column is empty"
    assert "time zone" in reasons[3] and reasons[4] == "duplicate of line 3" and "longer than 100" in reasons[5]
    assert report.summary().startswith("Imported 4 new (pending, confirmation emails queued)")

    with sessions() as session:
        people = {s.email: s for s in session.scalars(select(Subscriber))}
        assert sorted(people) == sorted(GOOD)
        assert all(s.status is Status.pending and s.confirmed_at is None for s in people.values())
        assert people["maria.gonzalez@example.com"].first_name == "María"
        assert people["maria.gonzalez@example.com"].timezone == "America/Denver"
        assert people["dee@example.com"].first_name == "Dee, Jr."
        assert people["tom.nguyen@example.com"].timezone == ZONE
        queued = session.execute(select(OutboxMessage.key, OutboxMessage.state)).all()
        assert sorted(queued) == [("sys:confirm:1", OutboxState.queued)] * 4
        ledger = session.scalars(select(ConsentEvent)).all()
        assert {(c.kind, c.source, c.ip, c.user_agent, c.wording_version) for c in ledger} == {
            ("signup", "import:front-desk.csv", None, None, CONSENT_VERSION)}


def test_confirmed_import_needs_a_consent_source_and_records_it(sessions, clinic_list):
    from nurture.people.subscriber_files import CsvImportError

    with pytest.raises(CsvImportError, match="--consent-source"):
        run(sessions, clinic_list, confirmed=True)
    assert table_counts(sessions)["subscribers"] == 0

    report = run(sessions, clinic_list, confirmed=True, consent_source=PAPER)
    assert (report.created, report.confirmations_queued, len(report.rejected)) == (4, 0, 6)
    assert report.summary().startswith("Imported 4 new (confirmed)")
    with sessions() as session:
        people = session.scalars(select(Subscriber)).all()
        assert {(s.status, s.confirmed_at) for s in people} == {(Status.confirmed, T0)}
        ledger = session.scalars(select(ConsentEvent)).all()
        assert len(ledger) == 4 and {c.subscriber_id for c in ledger} == {s.id for s in people}
        assert {(c.kind, c.source, c.created_at, c.wording, c.wording_version) for c in ledger} == {
            ("import", f"import:{PAPER}", T0, CONSENT_WORDINGS[CONSENT_VERSION], CONSENT_VERSION)}
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


@pytest.mark.parametrize("vouched", [False, True], ids=["double-opt-in", "confirmed"])
def test_importing_the_same_file_twice_changes_nothing(sessions, clinic_list, vouched):
    options = {"confirmed": True, "consent_source": PAPER} if vouched else {}
    first = run(sessions, clinic_list, **options)
    before = table_counts(sessions)
    again = run(sessions, clinic_list, now=T0 + timedelta(days=2), **options)
    assert (again.created, again.existing, again.suppressed, again.confirmations_queued) == (0, first.created, 0, 0)
    assert again.rejected == first.rejected
    assert table_counts(sessions) == before


def test_a_dry_run_reports_exactly_what_would_happen_and_writes_nothing(sessions, clinic_list):
    confirmed(sessions, "dee@example.com", T0 - timedelta(days=9))
    gone = confirmed(sessions, "ola@example.com", T0 - timedelta(days=9))
    with transaction(sessions) as session:
        subscribers.unsubscribe(session, gone, now=T0 - timedelta(days=1), request=REQUEST)
    before = table_counts(sessions)

    dry = run(sessions, clinic_list, dry_run=True)
    assert table_counts(sessions) == before
    assert dry.dry_run and dry.summary().startswith("Dry run, nothing written; would import 2 new")
    real = run(sessions, clinic_list)
    assert (dry.created, dry.existing, dry.suppressed, dry.rejected) == (
        real.created, real.existing, real.suppressed, real.rejected) == (2, 1, 1, dry.rejected)
    assert len(dry.rejected) == 6


def test_suppressed_addresses_are_never_resurrected_and_subscribed_ones_left_alone(sessions, tmp_path):
    ids = {name: confirmed(sessions, f"{name}@example.com", T0 - timedelta(days=30))
           for name in ("left", "bounced", "complained", "erased", "pending", "active")}
    with transaction(sessions) as session:
        subscribers.unsubscribe(session, ids["left"], now=T0 - timedelta(days=3), request=REQUEST)
        subscribers.mark_status(session, ids["bounced"], Status.bounced, T0 - timedelta(days=3))
        subscribers.mark_status(session, ids["complained"], Status.complained, T0 - timedelta(days=3))
        assert data_rights.erase(session, "erased@example.com", now=T0 - timedelta(days=3))
        pending = session.get(Subscriber, ids["pending"])
        pending.status, pending.confirmed_at = Status.pending, None
    with sessions() as session:
        before = {s.id: (s.status, s.email, s.first_name, s.updated_at) for s in session.scalars(select(Subscriber))}
    rows_before = table_counts(sessions)

    path = tmp_path / "old-list.csv"
    path.write_text("email,first_name,consent\n" + "".join(
        f"{name.upper()}@example.com,New {name},yes\n" for name in ids))
    for options in ({}, {"confirmed": True, "consent_source": PAPER}):
        report = run(sessions, path, **options)
        assert (report.created, report.existing, report.suppressed, report.rejected) == (0, 2, 4, [])
    with sessions() as session:
        after = {s.id: (s.status, s.email, s.first_name, s.updated_at) for s in session.scalars(select(Subscriber))}
    assert after == before and after[ids["erased"]][:2] == (Status.erased, None)
    assert table_counts(sessions) == rows_before


def test_batches_are_whole_and_a_rerun_after_a_crash_completes_the_file(sessions, tmp_path):
    path = tmp_path / "batches.csv"
    path.write_text("email,consent\n" + "".join(f"p{i}@example.com,yes\n" for i in range(7)))
    done = []

    def crash_after_first_batch(count):
        done.append(count)
        raise KeyboardInterrupt  # the operator's ^C, or the machine going down

    with pytest.raises(KeyboardInterrupt):
        run(sessions, path, batch_size=3, progress=crash_after_first_batch)
    counts = table_counts(sessions)
    assert done == [3] and counts["subscribers"] == 3 and counts["outbox"] == 3 and counts["consent_events"] == 3

    totals, steps = [], []
    report = run(sessions, path, batch_size=3, on_total=totals.append, progress=steps.append)
    assert (report.created, report.existing) == (4, 3)
    assert totals == [7] and steps == [3, 3, 1]
    assert table_counts(sessions)["outbox"] == 7


def test_export_round_trip(sessions, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "email,first_name,timezone,consent\n"
        "zoe@example.com,\"Zoë \"\"Z\"\" O'Neil, MD\",Europe/Paris,yes\n"
        "sly@example.com,=HYPERLINK(\"http://evil.example\"),,yes\n"
        "plain@example.com,,,yes\n"
        "gone@example.com,Gone,,yes\n"
    )
    run(sessions, path, confirmed=True, consent_source=PAPER)
    with transaction(sessions) as session:
        data_rights.erase(session, "gone@example.com", now=T0 + timedelta(hours=1))
        plain = session.scalar(select(Subscriber).where(Subscriber.email == "plain@example.com"))
        plain.wants_newsletter = False

    out = io.StringIO(newline="")
    with sessions() as session:
        assert export_csv(session, out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert rows == [
        {"email": "zoe@example.com", "first_name": "Zoë \"Z\" O'Neil, MD", "timezone": "Europe/Paris",
         "status": "confirmed", "created_at": T0.isoformat(), "confirmed_at": T0.isoformat(),
         "wants_series": "true", "wants_newsletter": "true"},
        # A name a spreadsheet would run as a formula is defused.
        {"email": "sly@example.com", "first_name": "'=HYPERLINK(\"http://evil.example\")", "timezone": ZONE,
         "status": "confirmed", "created_at": T0.isoformat(), "confirmed_at": T0.isoformat(),
         "wants_series": "true", "wants_newsletter": "true"},
        {"email": "plain@example.com", "first_name": "", "timezone": ZONE, "status": "confirmed",
         "created_at": T0.isoformat(), "confirmed_at": T0.isoformat(), "wants_series": "true",
         "wants_newsletter": "false"},
    ]
    # The export's addresses, names and zones import back as the same people.
    back = tmp_path / "back.csv"
    back.write_text("email,first_name,timezone,consent\n" + "".join(
        f"{r['email']},\"{r['first_name'].replace(chr(34), chr(34) * 2)}\",{r['timezone']},yes\n"
        for r in rows))
    assert run(sessions, back).existing == 3


def test_export_streams_a_large_list(sessions):
    bulk_confirmed(sessions, 2500, T0)
    out = io.StringIO()
    with sessions() as session:
        assert export_csv(session, out) == 2500
    lines = out.getvalue().splitlines()
    assert len(lines) == 2501 and lines[1].startswith("r0@example.com,N0,America/Chicago,confirmed,")
    assert lines[-1].startswith("r2499@example.com,")


def test_events_are_untouched_by_an_import(sessions, clinic_list):
    run(sessions, clinic_list)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0
