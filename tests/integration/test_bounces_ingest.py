"""Returned mail about emails we really sent: real welcome emails through the MemoryTransport,
bounces and complaints built from tests/fixtures/bounces with their real Message-IDs, read from a
Maildir or an mbox on disk and ingested into SQLite and PostgreSQL."""

from __future__ import annotations

import email
import mailbox
import re
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import func, select, update

from nurture.db import transaction
from nurture.feedback.bounce_sources import read_maildir_or_mbox
from nurture.feedback.bounces import ingest, outbox_ref
from nurture.models import Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.people import address_hashes, subscribers

from factories import REQUEST, confirmed

UTC = timezone.utc
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 09:00 in Chicago: the welcome goes at once

# fixture -> the subscriber it is about (the address the fixture names)
ABOUT = {
    "postfix_hard_511.eml": "jane.doe@example.org",
    "postfix_delayed_422.eml": "sam.full@example.net",
    "exim_hard_dsn.eml": "pat.gone@example.com",
    "exim_hard_plain.eml": "lee.oldjob@example.com",
    "exim_quota_plain.eml": "full.box@example.com",
    "postfix_plain_no_dsn.eml": "gone@example.net",
    "gmail_hard_511.eml": "no.such.person@gmail.com",
    "outlook_hard_5110.eml": "gone.user@outlook.com",
    "yahoo_arf_complaint.eml": "happy.reader@yahoo.com",
    "aol_arf_redacted.eml": "reader@aol.com",  # the report redacts it: matched by Message-ID only
    "out_of_office.eml": "jane.doe@example.org",
}


def bounce(name: str, original: str, *, at: datetime, serial: int = 1, address: str | None = None) -> bytes:
    """A fixture about the message ``original``, dated ``at``; ``address`` replaces the one it names."""
    raw = (FIXTURES / name).read_bytes()
    subs = {"@@MESSAGE_ID@@": original, "@@BOUNCE_ID@@": f"<{name}.{serial}.{at.timestamp():.0f}.{original.strip('<>')}>",
            "@@DATE@@": format_datetime(at)}
    for old, new in subs.items():
        raw = raw.replace(old.encode(), new.encode())
    if address:
        raw = re.sub(re.escape(ABOUT[name]).encode(), address.encode(), raw, flags=re.I)
    return raw


def sent_ids(memory_transport) -> dict[str, list[str]]:
    """recipient -> Message-IDs of what was sent to them, in order."""
    ids: dict[str, list[str]] = {}
    for _sender, recipient, data in memory_transport.sent:
        ids.setdefault(recipient, []).append(email.message_from_bytes(data)["Message-ID"])
    return ids


def statuses(runtime) -> dict[str, Status]:
    with runtime.sessions() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.status)).all())


def events(runtime, kind: str) -> list[tuple[str, int | None, str]]:
    with runtime.sessions() as session:
        return session.execute(
            select(Subscriber.email, Event.outbox_id, Event.detail)
            .join(Subscriber, Subscriber.id == Event.subscriber_id)
            .where(Event.kind == kind)
            .order_by(Event.id)
        ).all()


def event_count(runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Event))


def run_ingest(runtime, messages, now):
    s = runtime.settings
    return ingest(runtime.sessions, messages, now=now, secret=s.secret, from_header=s.mail_from)


def welcome_everyone(runtime, memory_transport, addresses) -> dict[str, list[str]]:
    for address in addresses:
        confirmed(runtime.sessions, address, T0)
    runtime.sender().run_pass(T0)
    ids = sent_ids(memory_transport)
    assert set(addresses) <= set(ids)
    return ids


def test_every_kind_of_returned_mail_from_a_maildir(runtime, memory_transport, tmp_path):
    ids = welcome_everyone(runtime, memory_transport, sorted(set(ABOUT.values())) + ["stays@example.com"])
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    for name, address in ABOUT.items():
        box.add(bounce(name, ids[address][0], at=T0 + timedelta(hours=1)))

    report = run_ingest(runtime, read_maildir_or_mbox(tmp_path / "bounces"), T0 + timedelta(hours=2))

    assert (report.read, report.hard, report.soft, report.complaints, report.unmatched, report.duplicates,
            report.unparseable, report.ignored, report.suppressed, report.unverified) == (11, 6, 2, 2, 0, 0, 0, 1, 8, 0)
    hard = {"jane.doe@example.org", "pat.gone@example.com", "lee.oldjob@example.com", "gone@example.net",
            "no.such.person@gmail.com", "gone.user@outlook.com"}
    complained = {"happy.reader@yahoo.com", "reader@aol.com"}
    soft_once = {"sam.full@example.net", "full.box@example.com"}
    assert statuses(runtime) == {**{a: Status.bounced for a in hard}, **{a: Status.complained for a in complained},
                                 **{a: Status.confirmed for a in soft_once}, "stays@example.com": Status.confirmed}

    row_of = {address: outbox_ref(sent[0]) for address, sent in ids.items()}
    bounced = events(runtime, "bounced")
    assert {(a, oid) for a, oid, _ in bounced} == {(a, row_of[a]) for a in hard}  # matched to the sent row
    assert dict((a, d) for a, _, d in bounced)["gone.user@outlook.com"].startswith(
        "5.1.10 550 5.1.10 RESOLVER.ADR.RecipientNotFound")
    assert {(a, oid) for a, oid, _ in events(runtime, "complained")} == {(a, row_of[a]) for a in complained}
    assert {a for a, _, _ in events(runtime, "soft_bounce")} == soft_once

    # The same mailbox again (as a cron job would): nothing changes.
    before = event_count(runtime)
    again = run_ingest(runtime, read_maildir_or_mbox(tmp_path / "bounces"), T0 + timedelta(hours=3))
    assert (again.read, again.duplicates, again.ignored, again.hard + again.soft + again.complaints) == (11, 10, 1, 0)
    assert event_count(runtime) == before

    # Eight days on every step is due; only those still subscribed get one.
    memory_transport.sent.clear()
    runtime.sender().run_pass(T0 + timedelta(days=8))
    recipients = {to for _f, to, _d in memory_transport.sent}
    assert recipients == soft_once | {"stays@example.com"}
    with runtime.sessions() as session:
        open_rows = session.scalar(
            select(func.count()).select_from(OutboxMessage).join(Subscriber)
            .where(Subscriber.status.in_([Status.bounced, Status.complained]),
                   OutboxMessage.state.in_([OutboxState.queued, OutboxState.retry, OutboxState.sending])))
    assert open_rows == 0


def test_soft_bounces_suppress_at_three_within_fifteen_days_read_from_an_mbox(runtime, memory_transport, tmp_path):
    """quick@ bounces softly on days 0, 2 and 5 (three emails); slow@ on days 0, 10 and 20."""
    for address in ("quick@example.com", "slow@example.com", "fine@example.com"):
        confirmed(runtime.sessions, address, T0)
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    sender = runtime.sender()

    def soft(address: str, nth_email: int, at: datetime):
        original = sent_ids(memory_transport)[address][nth_email]
        box.add(bounce("postfix_delayed_422.eml", original, at=at, address=address))
        box.flush()
        return run_ingest(runtime, read_maildir_or_mbox(path), at)  # the whole mbox, every time

    sender.run_pass(T0)
    soft("quick@example.com", 0, T0 + timedelta(hours=2))
    soft("slow@example.com", 0, T0 + timedelta(hours=2))
    sender.run_pass(T0 + timedelta(days=2))
    soft("quick@example.com", 1, T0 + timedelta(days=2, hours=2))
    sender.run_pass(T0 + timedelta(days=5))
    assert statuses(runtime)["quick@example.com"] is Status.confirmed  # two are not enough
    report = soft("quick@example.com", 2, T0 + timedelta(days=5, hours=2))
    assert (report.read, report.duplicates, report.soft, report.suppressed) == (4, 3, 1, 1)
    assert statuses(runtime)["quick@example.com"] is Status.bounced

    before = len(memory_transport.sent)
    sender.run_pass(T0 + timedelta(days=8))
    assert {to for _f, to, _d in memory_transport.sent[before:]} == {"slow@example.com", "fine@example.com"}

    soft("slow@example.com", 1, T0 + timedelta(days=10))
    soft("slow@example.com", 2, T0 + timedelta(days=20))
    assert statuses(runtime) == {"quick@example.com": Status.bounced, "slow@example.com": Status.confirmed,
                                 "fine@example.com": Status.confirmed}
    [(_, _, detail)] = [e for e in events(runtime, "bounced")]
    assert detail.startswith("3 soft bounces within 15 days; last: 4.2.2")
    assert len(events(runtime, "soft_bounce")) == 6


def test_soft_bounces_count_by_date_and_by_sent_message(runtime, memory_transport):
    """A backlog read at once is judged by the bounces' own dates, in any order; several delay
    warnings about one email are one soft bounce, not three."""
    people = ["backlog.spread@example.com", "backlog.close@example.com", "warned@example.com"]
    for address in people:
        confirmed(runtime.sessions, address, T0)
    sender = runtime.sender()
    for day in (0, 2, 5):
        sender.run_pass(T0 + timedelta(days=day))
    ids = sent_ids(memory_transport)
    backlog = [
        bounce("postfix_delayed_422.eml", ids["backlog.spread@example.com"][n], at=T0 + timedelta(days=d, hours=3),
               address="backlog.spread@example.com") for n, d in ((2, 20), (1, 10), (0, 0))
    ] + [
        bounce("postfix_delayed_422.eml", ids["backlog.close@example.com"][n], at=T0 + timedelta(days=d, hours=3),
               address="backlog.close@example.com") for n, d in ((2, 5), (0, 0), (1, 2))
    ] + [
        bounce("postfix_delayed_422.eml", ids["warned@example.com"][0], at=T0 + timedelta(hours=h), serial=h,
               address="warned@example.com") for h in (4, 28, 52)
    ]
    report = run_ingest(runtime, backlog, T0 + timedelta(days=21))
    assert (report.soft, report.suppressed) == (9, 1)
    assert statuses(runtime) == {"backlog.spread@example.com": Status.confirmed,
                                 "backlog.close@example.com": Status.bounced,
                                 "warned@example.com": Status.confirmed}


def test_never_downgrade_and_a_complaint_outranks_a_bounce(runtime, memory_transport):
    ids = welcome_everyone(runtime, memory_transport,
                           ["left@example.com", "angry@example.com", "gone.then.angry@example.com"])
    with transaction(runtime.sessions) as session:
        left = address_hashes.find_by_email(session, "left@example.com")
        subscribers.unsubscribe(session, left.id, now=T0 + timedelta(minutes=5), request=REQUEST)
    at = T0 + timedelta(hours=1)
    run_ingest(runtime, [
        bounce("postfix_hard_511.eml", ids["left@example.com"][0], at=at, address="left@example.com"),
        bounce("yahoo_arf_complaint.eml", ids["left@example.com"][0], at=at, address="left@example.com"),
        bounce("yahoo_arf_complaint.eml", ids["angry@example.com"][0], at=at, address="angry@example.com"),
        bounce("gmail_hard_511.eml", ids["gone.then.angry@example.com"][0], at=at,
               address="gone.then.angry@example.com"),
    ], at)
    run_ingest(runtime, [
        bounce("postfix_hard_511.eml", ids["angry@example.com"][0], at=at, serial=2, address="angry@example.com"),
        bounce("aol_arf_redacted.eml", ids["gone.then.angry@example.com"][0], at=at, serial=2),
    ], at + timedelta(hours=1))
    assert statuses(runtime) == {"left@example.com": Status.unsubscribed, "angry@example.com": Status.complained,
                                 "gone.then.angry@example.com": Status.complained}
    # What happened is still on record.
    assert {a for a, _, _ in events(runtime, "bounced")} == {
        "left@example.com", "angry@example.com", "gone.then.angry@example.com"}
    assert {a for a, _, _ in events(runtime, "complained")} == {
        "left@example.com", "angry@example.com", "gone.then.angry@example.com"}


def test_a_forged_message_id_suppresses_nobody(runtime, memory_transport):
    """An id in our form that fails the digest proves nothing: neither the row it names nor the
    address the report names is touched; the claim is kept as unverified, with the reason."""
    ids = welcome_everyone(runtime, memory_transport, ["victim@example.com", "typo@example.com"])
    real = ids["victim@example.com"][0]
    forged = real[:real.index(".") + 1] + "0" * 16 + real[real.index("@"):]
    at = T0 + timedelta(hours=1)
    report = run_ingest(runtime, [bounce("postfix_hard_511.eml", forged, at=at, address="typo@example.com")], at)
    assert (report.hard, report.unmatched, report.unverified, report.suppressed) == (0, 0, 1, 0)
    assert statuses(runtime) == {"victim@example.com": Status.confirmed, "typo@example.com": Status.confirmed}
    assert events(runtime, "bounced") == []
    [(about, outbox_id, detail)] = events(runtime, "unverified")
    assert (about, outbox_id) == ("typo@example.com", None)  # linked to whom it names, so erasure clears it
    assert detail == (f"hard typo@example.com: Message-ID {forged} looks like ours but its digest fails; "
                      "sender not a trusted feedback loop")
    # A forged id about an address we do not know: unverified too, and linked to nobody.
    report = run_ingest(runtime, [bounce("postfix_hard_511.eml", forged, at=at, serial=2,
                                         address="stranger@example.com")], at)
    assert (report.hard, report.unmatched, report.unverified) == (0, 0, 1)
    assert statuses(runtime)["victim@example.com"] is Status.confirmed


def test_our_message_id_anywhere_in_the_returned_headers_ties_the_report(runtime, memory_transport):
    """The returned copy may carry a relay's id; ours can still be in the threading headers."""
    ids = welcome_everyone(runtime, memory_transport, ["threaded@example.com", "copy@example.com"])
    at = T0 + timedelta(hours=1)
    relayed = bounce("postfix_hard_511.eml", "<relay.1@mx.example.org>", at=at, address="threaded@example.com")
    relayed = relayed.replace(b"Message-Id: ", f"In-Reply-To: {ids['threaded@example.com'][0]}\nMessage-Id: ".encode(), 1)
    report = run_ingest(runtime, [relayed, bounce("postfix_hard_511.eml", ids["copy@example.com"][0], at=at,
                                                  address="copy@example.com")], at)
    assert (report.hard, report.suppressed, report.unverified) == (2, 2, 0)
    assert statuses(runtime) == {"threaded@example.com": Status.bounced, "copy@example.com": Status.bounced}


def test_unparseable_and_unverified_are_counted_not_fatal(runtime, memory_transport):
    welcome_everyone(runtime, memory_transport, ["someone@example.com"])
    at = T0 + timedelta(hours=1)
    no_id = bounce("postfix_hard_511.eml", "<not-ours@elsewhere.example>", at=at, address="nobody@example.com")
    report = run_ingest(runtime, [b"", b"\x00\x01 binary junk", no_id, no_id], at)
    assert (report.read, report.unparseable, report.unverified, report.duplicates) == (4, 2, 1, 1)
    assert statuses(runtime) == {"someone@example.com": Status.confirmed}


def test_an_erased_subscriber_stays_erased(runtime, memory_transport):
    ids = welcome_everyone(runtime, memory_transport, ["erased@example.com"])
    with transaction(runtime.sessions) as session:
        session.execute(update(Subscriber).values(status=Status.erased, email=None))
    at = T0 + timedelta(hours=1)
    report = run_ingest(runtime, [bounce("gmail_hard_511.eml", ids["erased@example.com"][0], at=at,
                                         address="erased@example.com")], at)
    assert (report.hard, report.suppressed) == (1, 0)
    with runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status)) is Status.erased
