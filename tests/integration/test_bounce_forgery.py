"""Forged reports change nothing: a spam complaint or a bounce mailed to the bounce inbox by
anyone, naming a subscriber but no message we sent, neither suppresses them nor trips the
complaint circuit breaker; it is recorded as unverified and shown on /admin. Real complaints
count people, not reports. On SQLite and PostgreSQL, with real welcome emails sent first."""

from __future__ import annotations

import email
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nurture.db import transaction
from nurture.feedback.bounces import ingest, recent_unverified
from nurture.models import Event, Status, Subscriber
from nurture.people import data_rights
from nurture.runtime import Runtime
from nurture.sending import outbox
from nurture.sending.pass_summary import CircuitOpen
from nurture.sending.transports import MemoryTransport
from nurture.web import create_app
from nurture.web.admin import mount_admin

from conftest import make_settings
from factories import bulk_confirmed, confirmed

UTC = timezone.utc
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 09:00 in Chicago: the welcome goes at once
PASSWORD = "admin pass for forgery tests"
CROWD = 120  # the breaker judges a week with at least 100 emails sent


@pytest.fixture
def runtime(tmp_path, database_url):
    rt = Runtime(make_settings(tmp_path, database_url, admin_password=PASSWORD), transport_override=MemoryTransport())
    yield rt
    rt.close()


def complaint(address: str, original: str, *, serial: int, at: datetime) -> bytes:
    """Yahoo's ARF complaint about ``original``, naming ``address``, with its own Message-ID."""
    raw = (FIXTURES / "yahoo_arf_complaint.eml").read_bytes()
    for old, new in {"@@MESSAGE_ID@@": original, "@@BOUNCE_ID@@": f"<arf.{serial}.{at.timestamp():.0f}@yahoo.example>",
                     "@@DATE@@": email.utils.format_datetime(at)}.items():
        raw = raw.replace(old.encode(), new.encode())
    return re.sub(rb"happy\.reader@yahoo\.com", address.encode(), raw, flags=re.I)


def forged(address: str, *, serial: int, at: datetime) -> bytes:
    """The same complaint as a forger writes it: the victim's address, an id that is not ours."""
    return complaint(address, f"<spoof-{serial}@attacker.example>", serial=serial, at=at)


def sent_to(runtime, address: str) -> list[str]:
    return [email.message_from_bytes(data)["Message-ID"]
            for _f, to, data in runtime.transport.sent if to == address]


def run_ingest(runtime, messages, now):
    s = runtime.settings
    return ingest(runtime.sessions, messages, now=now, secret=s.secret, from_header=s.mail_from,
                  trusted_senders=s.trusted_feedback_senders)


def status_of(runtime, address: str) -> Status:
    with runtime.sessions() as session:
        return session.scalar(select(Subscriber.status).where(Subscriber.email == address))


def rates(runtime, now: datetime) -> tuple[int, int]:
    with runtime.sessions() as session:
        return outbox.recent_rates(session, since=now - timedelta(days=7))


def a_week_of_mail(runtime) -> None:
    """CROWD confirmed people, target@ among them, each sent the welcome at T0."""
    bulk_confirmed(runtime.sessions, CROWD - 1, T0 - timedelta(minutes=1))
    confirmed(runtime.sessions, "target@example.com", T0 - timedelta(minutes=1))
    runtime.sender().run_pass(T0)
    assert len(runtime.transport.sent) == CROWD


def admin_page(runtime, now: datetime) -> str:
    app = create_app(runtime, dispatch=False, clock=lambda: now)
    if not any(getattr(route, "path", None) == "/admin" for route in app.routes):
        mount_admin(app, runtime, clock=lambda: now)
    with TestClient(app) as client:
        response = client.get("/admin", auth=("admin", PASSWORD))
    assert response.status_code == 200
    return response.text


def test_a_forged_complaint_suppresses_nobody_and_trips_nothing(runtime):
    a_week_of_mail(runtime)
    at = T0 + timedelta(hours=3)
    report = run_ingest(runtime, [forged("Target@example.com", serial=1, at=at)], at)

    assert (report.complaints, report.suppressed, report.unverified) == (0, 0, 1)
    assert status_of(runtime, "target@example.com") is Status.confirmed
    assert rates(runtime, at) == (0, CROWD)
    with runtime.sessions() as session:
        [(subscriber, detail)] = session.execute(
            select(Subscriber.email, Event.detail).join(Subscriber, Subscriber.id == Event.subscriber_id)
            .where(Event.kind == "unverified")).all()
        assert session.scalar(select(Event.id).where(Event.kind == "complained")) is None
    assert subscriber == "target@example.com"
    assert detail == "complaint target@example.com: no Message-ID of ours; sender not a trusted feedback loop"

    # The breaker stays closed: the next pass sends the second email to everyone, target@ too.
    runtime.transport.sent.clear()
    summary = runtime.sender().run_pass(T0 + timedelta(days=2))
    assert summary.sent == CROWD and sent_to(runtime, "target@example.com")

    page = admin_page(runtime, at)
    section = page[page.index('id="unverified-heading"'):]
    section = section[:section.index("</section>")]
    assert "spam complaint" in section and "target@example.com" in section
    assert "no Message-ID of ours; sender not a trusted feedback loop" in section


def test_one_real_complaint_in_the_same_week_does_trip_it(runtime):
    """The same week with the complaint tied to the welcome we sent: 1 in 120 is over 0.3%."""
    a_week_of_mail(runtime)
    at = T0 + timedelta(hours=3)
    report = run_ingest(runtime, [complaint("target@example.com", sent_to(runtime, "target@example.com")[0],
                                            serial=1, at=at)], at)
    assert (report.complaints, report.suppressed, report.unverified) == (1, 1, 0)
    assert status_of(runtime, "target@example.com") is Status.complained
    with pytest.raises(CircuitOpen, match="1 spam complaints for 120 emails"):
        runtime.sender().run_pass(T0 + timedelta(days=2))


def test_complaints_count_people_not_reports(runtime):
    for address in ("angry@example.com", "annoyed@example.com", "bystander@example.com"):
        confirmed(runtime.sessions, address, T0 - timedelta(minutes=1))
    runtime.sender().run_pass(T0)
    at = T0 + timedelta(hours=2)
    angry = sent_to(runtime, "angry@example.com")[0]
    # Four real reports about one person (relayed again and again), one about another.
    real = [complaint("angry@example.com", angry, serial=n, at=at + timedelta(minutes=n)) for n in range(4)]
    real.append(complaint("annoyed@example.com", sent_to(runtime, "annoyed@example.com")[0], serial=9, at=at))
    # Four forgeries about a third: nothing at all.
    fakes = [forged("bystander@example.com", serial=20 + n, at=at) for n in range(4)]

    report = run_ingest(runtime, real + fakes, at + timedelta(hours=1))

    assert (report.complaints, report.unverified, report.duplicates) == (5, 4, 0)
    assert rates(runtime, at + timedelta(hours=1)) == (2, 3)
    assert status_of(runtime, "bystander@example.com") is Status.confirmed


def test_malformed_reports_do_not_stop_the_rest(runtime):
    confirmed(runtime.sessions, "gone@example.org", T0 - timedelta(minutes=1))
    runtime.sender().run_pass(T0)
    at = T0 + timedelta(hours=1)
    ours = sent_to(runtime, "gone@example.org")[0]
    genuine = (FIXTURES / "postfix_hard_511.eml").read_bytes().replace(b"@@MESSAGE_ID@@", ours.encode()) \
        .replace(b"@@BOUNCE_ID@@", b"<genuine.1@mx.example>").replace(b"@@DATE@@", email.utils.format_datetime(at).encode())
    genuine = genuine.replace(b"jane.doe@example.org", b"gone@example.org").replace(b"Jane.Doe@example.org",
                                                                                      b"gone@example.org")
    bad_charset = genuine.replace(b"charset=utf-8", b"charset=x-no-such-charset").replace(
        b"<genuine.1@mx.example>", b"<charset.1@mx.example>").replace(b"The mail system", b"The mail \xff\xfe system")
    garbled = [
        b"",
        b"\r\n\r\n",
        b"Subject: only a subject\n",
        b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; boundary=\"b\"\n\n--b\nContent-Type: mess",
        b"From: feedback@fbl.example.net\nDKIM-Signature: \xff\x00 v=1; d=fbl.example.net;;; b==\n"
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=x\n\n--x\n"
        b"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nOriginal-Rcpt-To: gone@example.org\n--x--\n",
        b"From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n\n" + b"550 5.1.1 <huge@example.org> no\n" * 60_000,
    ]
    report = run_ingest(runtime, [*garbled, bad_charset, genuine], at)
    assert report.read == len(garbled) + 2
    assert report.hard == 2  # the bad charset is read as well as can be, and is ours
    assert status_of(runtime, "gone@example.org") is Status.bounced
    assert report.unparseable + report.ignored + report.unverified + report.hard + report.duplicates == report.read


def test_erasing_the_person_a_forgery_named_erases_the_address_it_quoted(runtime):
    confirmed(runtime.sessions, "named@example.com", T0)
    at = T0 + timedelta(hours=1)
    run_ingest(runtime, [forged("named@example.com", serial=1, at=at), forged("nobody@example.com", serial=2, at=at)],
               at)
    with runtime.sessions() as session:
        shown, total = recent_unverified(session)
    assert total == 2 and {u.address for u in shown} == {"named@example.com", "nobody@example.com"}
    assert {u.claimed for u in shown} == {"complaint"}

    with transaction(runtime.sessions) as session:
        assert data_rights.erase(session, "named@example.com", now=at + timedelta(hours=1))
    with runtime.sessions() as session:
        shown, total = recent_unverified(session)
    assert total == 2 and [u.address for u in shown].count(None) == 1
    assert "named@example.com" not in admin_page(runtime, at + timedelta(hours=2))
