"""Access and erasure on SQLite and PostgreSQL. The raw tables are read to prove what is gone."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text, update

from nurture.db import transaction
from nurture.models import Broadcast, OutboxMessage, OutboxState
from nurture.people import address_hashes, data_rights
from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS
from nurture.people.subscriber_files import import_csv
from nurture.people.validation import InvalidInput, email_hash
from nurture.sending import outbox

from factories import REQUEST, confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
ADDRESS = "ann.patient@example.com"
CONSULT = "https://clearwater-psychiatry.example/consultation"


@pytest.fixture
def sessions(runtime):
    return runtime.sessions


@pytest.fixture
def ann(sessions):
    """Ann signed up and confirmed from a browser, got a welcome email, a bounce report quoting
    her address, was put in a newsletter issue and has the next sequence email queued."""
    sid = confirmed(sessions, "Ann.Patient@Example.com", T0 - timedelta(days=3))
    with transaction(sessions) as session:
        session.execute(text("UPDATE subscribers SET first_name = 'Ann' WHERE id = :id"), {"id": sid})
        issue = Broadcast(template="newsletter/2026-12.html.j2", audience="all", status="scheduled",
                          send_at=T0 + timedelta(days=1), created_at=T0, recipients=1)
        session.add(issue)
        session.flush()
        for key, due in (("seq:nurture:welcome", T0 - timedelta(days=2)), ("seq:nurture:history", T0),
                         (f"bcast:{issue.id}", T0 + timedelta(days=1))):
            outbox.enqueue(session, subscriber_id=sid, key=key, template=f"{key}.html.j2", due_at=due, now=due)
        welcome = session.scalar(select(OutboxMessage).where(OutboxMessage.key == "seq:nurture:welcome"))
        welcome.state, welcome.sent_at, welcome.attempts = OutboxState.sent, T0 - timedelta(days=2), 1
        welcome.smtp_reply = f"250 2.0.0 Ok: queued as 4XyZ for <{ADDRESS}>"
        outbox.record_event(session, "sent", T0 - timedelta(days=2), subscriber_id=sid, outbox_id=welcome.id,
                            detail=welcome.smtp_reply)
        outbox.record_event(session, "soft_bounce", T0 - timedelta(days=1), subscriber_id=sid,
                            outbox_id=welcome.id, detail=f"4.2.2 <{ADDRESS}>: mailbox full")
        outbox.record_event(session, "clicked", T0 - timedelta(days=1), subscriber_id=sid, outbox_id=welcome.id,
                            detail=f"{CONSULT}?utm_source=nurture&prefill=ann.patient%40example.com#book")
        session.execute(update(OutboxMessage).where(OutboxMessage.key == "sys:confirm:1")
                        .values(state=OutboxState.failed, last_error=f"451 greylisted {ADDRESS}", attempts=3))
    return sid, issue.id


def raw(sessions, sql: str, **params):
    with sessions() as session:
        return [tuple(row) for row in session.execute(text(sql), params)]


def test_export_personal_holds_everything_including_the_ledger(sessions, ann):
    sid, issue = ann
    with sessions() as session:
        data = data_rights.export_personal(session, "  ANN.patient@example.com ")
        assert data_rights.export_personal(session, "nobody@example.com") is None
        with pytest.raises(InvalidInput):
            data_rights.export_personal(session, "not an address")
    assert json.loads(json.dumps(data)) == data  # JSON-ready as it is
    person = data["subscriber"]
    assert (person["email"], person["first_name"], person["status"]) == (ADDRESS, "Ann", "confirmed")
    with sessions() as session:
        assert person["email_hash"] == address_hashes.stored_hash(session, ADDRESS)
    assert data["format"] == "nurture-personal-data/2"
    assert person["confirmed_at"] == (T0 - timedelta(days=3)).isoformat()
    assert [(c["kind"], c["source"], c["ip"], c["user_agent"], c["wording_version"], c["wording"])
            for c in data["consent"]] == [
        ("signup", REQUEST.source, REQUEST.ip, REQUEST.user_agent, CONSENT_VERSION, CONSENT_WORDINGS[CONSENT_VERSION]),
        ("confirm", REQUEST.source, REQUEST.ip, REQUEST.user_agent, CONSENT_VERSION,
         CONSENT_WORDINGS[CONSENT_VERSION]),
    ]
    messages = {m["key"]: m for m in data["messages"]}
    assert set(messages) == {"sys:confirm:1", "seq:nurture:welcome", "seq:nurture:history", f"bcast:{issue}"}
    welcome = messages["seq:nurture:welcome"]
    assert (welcome["state"], welcome["attempts"], welcome["sent_at"]) == (
        "sent", 1, (T0 - timedelta(days=2)).isoformat())
    assert ADDRESS in welcome["smtp_reply"] and ADDRESS in messages["sys:confirm:1"]["last_error"]
    assert [(e["kind"], e["message"]) for e in data["events"]] == [
        ("sent", "seq:nurture:welcome"), ("soft_bounce", "seq:nurture:welcome"), ("clicked", "seq:nurture:welcome")]
    assert data["broadcasts"] == [{"id": issue, "template": "newsletter/2026-12.html.j2",
                                   "send_at": (T0 + timedelta(days=1)).isoformat(), "status": "scheduled"}]


def test_erase_removes_personal_data_and_keeps_the_tombstone_and_counts(sessions, ann, tmp_path):
    sid, issue = ann
    counts = raw(sessions, "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM events), "
                           "(SELECT count(*) FROM consent_events)")[0]
    with transaction(sessions) as session:
        assert data_rights.erase(session, "ann.patient@EXAMPLE.com", now=T0) is True
        tombstone = address_hashes.stored_hash(session, ADDRESS)

    assert tombstone != email_hash(ADDRESS)  # keyed: a guessed address hashed alone matches nothing
    assert raw(sessions, "SELECT email, first_name, email_hash, status, status_changed_at IS NOT NULL, CAST(tags AS TEXT) "
                         "FROM subscribers") == [(None, None, tombstone, "erased", True, "[]")]
    ledger = raw(sessions, "SELECT kind, source, ip, user_agent, wording_version, wording IS NOT NULL "
                           "FROM consent_events ORDER BY id")
    assert ledger == [
        ("signup", REQUEST.source, None, None, CONSENT_VERSION, True),
        ("confirm", REQUEST.source, None, None, CONSENT_VERSION, True),
        ("erase", "erasure-request", None, None, None, False),
    ]
    assert raw(sessions, "SELECT key, state, smtp_reply, last_error FROM outbox ORDER BY id") == [
        ("sys:confirm:1", "failed", None, None),
        ("seq:nurture:welcome", "sent", None, None),
        ("seq:nurture:history", "suppressed", None, None),  # queued mail cancelled
        (f"bcast:{issue}", "suppressed", None, None),
    ]
    # A click keeps the link the clinic wrote (the consultation goal still counts), not its query.
    assert raw(sessions, "SELECT kind, detail FROM events ORDER BY id") == [
        ("sent", None), ("soft_bounce", None), ("clicked", CONSULT), ("erased", None)]
    # No trace of the address anywhere in the database's text columns.
    for table, columns in {"subscribers": "email, first_name", "consent_events": "ip, user_agent, source, wording",
                           "outbox": "key, template, smtp_reply, last_error", "events": "kind, detail"}.items():
        for row in raw(sessions, f"SELECT {columns} FROM {table}"):
            assert not any(value and "ann" in value.lower() for value in row), (table, row)
    after = raw(sessions, "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM events), "
                          "(SELECT count(*) FROM consent_events)")[0]
    assert after == (counts[0], counts[1] + 1, counts[2] + 1)  # the counts stay; one event, one ledger row added

    with transaction(sessions) as session:
        assert data_rights.erase(session, ADDRESS, now=T0 + timedelta(hours=1)) is False
        assert data_rights.erase(session, "stranger@example.com", now=T0) is False
    with sessions() as session:
        tombstone = data_rights.export_personal(session, ADDRESS)
    assert tombstone["subscriber"]["email"] is None and tombstone["subscriber"]["status"] == "erased"

    path = tmp_path / "list.csv"
    path.write_text(f"email,first_name,consent\n{ADDRESS},Ann,yes\n")
    for options in ({}, {"confirmed": True, "consent_source": "paper form at the clinic"}):
        report = import_csv(sessions, path, now=T0 + timedelta(days=1), default_timezone="UTC", **options)
        assert (report.created, report.suppressed) == (0, 1)
    assert raw(sessions, "SELECT email, status FROM subscribers") == [(None, "erased")]


def test_an_erased_person_gets_no_more_mail(runtime, memory_transport):
    sid = confirmed(runtime.sessions, ADDRESS, T0 - timedelta(days=3))
    other = confirmed(runtime.sessions, "other@example.com", T0 - timedelta(days=3))
    with transaction(runtime.sessions) as session:
        for who in (sid, other):
            outbox.enqueue(session, subscriber_id=who, key="seq:nurture:welcome-history",
                           template="nurture/10-welcome-history.html.j2", due_at=T0, now=T0)
        assert data_rights.erase(session, ADDRESS, now=T0)
    runtime.sender().run_pass(T0 + timedelta(days=30))
    recipients = [recipient for _, recipient, _ in memory_transport.sent]
    assert ADDRESS not in recipients and "other@example.com" in recipients
    assert raw(runtime.sessions, "SELECT DISTINCT state FROM outbox WHERE subscriber_id = :id", id=sid) == [
        ("suppressed",)]


@pytest.mark.parametrize(
    ("kind", "detail", "kept"),
    [
        ("clicked", CONSULT, CONSULT),
        ("clicked", f"{CONSULT}?e=ann.patient%40example.com#book", CONSULT),
        ("clicked", "https://user:secret@clinic.example:8443/a?b=c", "https://clinic.example:8443/a"),
        ("clicked", "https://clinic.example/book/Ann.Patient%40Example.com", None),
        ("clicked", "https://clinic.example/book/ann.patient", None),
        ("clicked", "not a link", None),
        ("bounced", "5.1.1 user unknown", None),
        ("sent", "250 2.0.0 OK", None),
    ],
)
def test_what_is_left_of_an_event_detail(kind, detail, kept):
    assert data_rights._kept_detail(kind, detail, ADDRESS) == kept
