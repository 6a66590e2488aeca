"""Complaints from a feedback loop the operator trusts (NURTURE_TRUSTED_FEEDBACK_SENDERS) count
without a Message-ID of ours, but only when DKIM proves they come from it: a real RSA key pair
made here with dkimpy's key tools (openssl), reports signed with dkimpy, and a dict standing in
for DNS. On SQLite and PostgreSQL where the database is involved."""

from __future__ import annotations

import email
import mailbox
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dkim
import pytest
from dkim import dknewkey
from sqlalchemy import select

from nurture.feedback.bounce_sources import read_maildir_or_mbox
from nurture.feedback.bounce_trust import judge_sender, trusted_domain
from nurture.feedback.bounces import ingest
from nurture.models import Event, Status, Subscriber
from nurture.runtime import Runtime
from nurture.sending import outbox
from nurture.sending.transports import MemoryTransport

from conftest import make_settings
from factories import confirmed

UTC = timezone.utc
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
AT = T0 + timedelta(hours=5)
SELECTOR = b"fbl2026"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[bytes, bytes]]:
    """Two fresh RSA key pairs, the loop's and an impostor's: (PEM private key, DNS TXT record)."""
    folder = tmp_path_factory.mktemp("dkim")
    made = {}
    for name in ("fbl", "impostor"):
        private, record = folder / f"{name}.pem", folder / f"{name}.dns"
        dknewkey.GenRSAKeys(str(private), verbose=False)
        dknewkey.ExtractRSADnsPublicKey(str(private), str(record), verbose=False)
        made[name] = (private.read_bytes(), record.read_bytes())
    return made


@pytest.fixture
def dns(keys):
    """DNS as dkimpy asks it: the loop's key at fbl2026._domainkey.fbl.example.net, the
    impostor's at its own domain; anything else does not exist."""
    records = {b"fbl2026._domainkey.fbl.example.net.": keys["fbl"][1],
               b"fbl2026._domainkey.attacker.example.": keys["impostor"][1]}
    asked: list[bytes] = []

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        asked.append(name)
        return records.get(name)

    lookup.asked = asked
    return lookup


@pytest.fixture
def runtime(tmp_path, database_url):
    rt = Runtime(make_settings(tmp_path, database_url, trusted_feedback_senders="fbl.example.net"),
                 transport_override=MemoryTransport())
    yield rt
    rt.close()


def report(rcpt: str, *, original: str = "<4f2a9c@mta7.fbl.example.net>", serial: int = 1,
           sender: str = "feedback@fbl.example.net") -> bytes:
    """The loop's ARF complaint naming ``rcpt``; by default with an original id that is not ours."""
    raw = (FIXTURES / "fbl_arf_complaint.eml").read_bytes()
    for old, new in {"@@RCPT@@": rcpt, "@@MESSAGE_ID@@": original, "@@BOUNCE_ID@@": f"<fbl.{serial}@fbl.example.net>",
                     "@@DATE@@": email.utils.format_datetime(AT), "feedback@fbl.example.net": sender}.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw


def signed(raw: bytes, private_key: bytes, domain: bytes = b"fbl.example.net", **options) -> bytes:
    return dkim.sign(raw, SELECTOR, domain, private_key, include_headers=SIGNED_HEADERS, linesep=b"\n",
                     **options) + raw


def run_ingest(runtime, messages, dns):
    s = runtime.settings
    return ingest(runtime.sessions, messages, now=AT, secret=s.secret, from_header=s.mail_from,
                  trusted_senders=s.trusted_feedback_senders, dnsfunc=dns)


def status_of(runtime, address: str) -> Status:
    with runtime.sessions() as session:
        return session.scalar(select(Subscriber.status).where(Subscriber.email == address))


def events(runtime, kind: str) -> list[tuple[int | None, str]]:
    with runtime.sessions() as session:
        return session.execute(select(Event.outbox_id, Event.detail).where(Event.kind == kind).order_by(Event.id)).all()


# ------------------------------------------------------------------------ through ingest, both databases

def test_a_signed_report_from_the_trusted_loop_suppresses_without_our_message_id(runtime, keys, dns, tmp_path):
    confirmed(runtime.sessions, "reader@example.com", T0)
    confirmed(runtime.sessions, "other@example.com", T0)
    # Read from a Maildir on disk, as `bounces ingest` does: the signed bytes must survive the trip.
    box = mailbox.Maildir(tmp_path / "fbl", create=True)
    box.add(signed(report("Reader@example.com"), keys["fbl"][0]))
    result = run_ingest(runtime, read_maildir_or_mbox(tmp_path / "fbl"), dns)

    assert (result.complaints, result.suppressed, result.unverified, result.unmatched) == (1, 1, 0, 0)
    assert status_of(runtime, "reader@example.com") is Status.complained
    assert status_of(runtime, "other@example.com") is Status.confirmed
    assert [oid for oid, _ in events(runtime, "complained")] == [None]  # matched by address: no row named
    assert dns.asked == [b"fbl2026._domainkey.fbl.example.net."]
    with runtime.sessions() as session:
        assert outbox.recent_rates(session, since=T0) == (1, 0)


def test_the_same_report_altered_after_signing_is_unverified(runtime, keys, dns):
    confirmed(runtime.sessions, "reader@example.com", T0)
    confirmed(runtime.sessions, "victim@example.com", T0)
    genuine = signed(report("reader@example.com"), keys["fbl"][0])
    altered = genuine.replace(b"Original-Rcpt-To: reader@example.com", b"Original-Rcpt-To: victim@example.com")
    altered = altered.replace(b"To: reader@example.com", b"To: victim@example.com")
    assert altered != genuine

    result = run_ingest(runtime, [altered], dns)

    assert (result.complaints, result.suppressed, result.unverified) == (0, 0, 1)
    assert status_of(runtime, "victim@example.com") is Status.confirmed
    [(_, detail)] = events(runtime, "unverified")
    assert detail == ("complaint victim@example.com: no Message-ID of ours; "
                      "claims trusted feedback loop fbl.example.net but its DKIM signature did not verify (body hash mismatch)")


def test_an_unsigned_report_from_the_trusted_loop_needs_our_message_id(runtime, dns):
    """Anyone can write From: feedback@fbl.example.net. Unsigned, it is believed only through
    a Message-ID of ours, like any other report."""
    confirmed(runtime.sessions, "reader@example.com", T0)
    confirmed(runtime.sessions, "tied@example.com", T0)
    runtime.sender().run_pass(T0)
    ours = email.message_from_bytes(runtime.transport.sent[-1][2])
    assert ours["To"] == "tied@example.com"

    result = run_ingest(runtime, [report("reader@example.com"),
                                  report("tied@example.com", original=ours["Message-ID"], serial=2)], dns)

    assert (result.complaints, result.suppressed, result.unverified) == (1, 1, 1)
    assert status_of(runtime, "reader@example.com") is Status.confirmed
    assert status_of(runtime, "tied@example.com") is Status.complained
    [(_, detail)] = events(runtime, "unverified")
    assert detail.endswith("no Message-ID of ours; from trusted feedback loop fbl.example.net but not DKIM-signed")
    assert dns.asked == []


def test_signed_by_someone_else_or_sent_by_someone_else_is_unverified(runtime, keys, dns):
    confirmed(runtime.sessions, "reader@example.com", T0)
    impostor = signed(report("reader@example.com", serial=1), keys["impostor"][0], domain=b"attacker.example")
    # A genuine signature of the impostor's own domain, from the impostor's own address.
    own = signed(report("reader@example.com", serial=2, sender="feedback@attacker.example"),
                 keys["impostor"][0], domain=b"attacker.example")
    # The loop's key, but the report claims a From outside the trusted domain.
    outside = signed(report("reader@example.com", serial=3, sender="feedback@fbl.example.org"), keys["fbl"][0])

    result = run_ingest(runtime, [impostor, own, outside], dns)

    assert (result.complaints, result.unverified) == (0, 3)
    assert status_of(runtime, "reader@example.com") is Status.confirmed
    reasons = [d.partition("; ")[2] for _, d in events(runtime, "unverified")]
    assert reasons == ["claims trusted feedback loop fbl.example.net but is DKIM-signed by d=attacker.example",
                       "sender not a trusted feedback loop", "sender not a trusted feedback loop"]
    assert dns.asked == []  # a forger cannot make us look up a domain of its choosing


def test_a_trusted_report_about_an_unknown_address_is_unmatched(runtime, keys, dns):
    result = run_ingest(runtime, [signed(report("stranger@example.com"), keys["fbl"][0])], dns)
    assert (result.complaints, result.unmatched, result.unverified) == (0, 1, 0)


def test_garbage_signatures_do_not_stop_the_rest_and_a_dns_outage_defers(runtime, keys, dns):
    confirmed(runtime.sessions, "reader@example.com", T0)
    confirmed(runtime.sessions, "later@example.com", T0)
    good = signed(report("reader@example.com", serial=9), keys["fbl"][0])
    garbage = [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=fbl.example.net; s=fbl2026; h=from; bh=!!; b=%%%\n"
        + report("reader@example.com", serial=1),
        b"DKIM-Signature: \xff\xfe;;;=d=\n" + report("reader@example.com", serial=2),
        b"DKIM-Signature: v=1; d=fbl.example.net; s=fbl2026; h=from; b=\n" + report("reader@example.com", serial=3),
        signed(report("reader@example.com", serial=4), keys["fbl"][0]).replace(b"d=fbl.example.net",
                                                                              b"d=fbl.example.net; x=1"),
    ]

    def outage(name: bytes, timeout: int = 5) -> bytes | None:
        raise dkim.DnsTimeoutError("no answer in 5 s")

    # DNS down: the genuine report is left for the next run (no marker, no event); garbage is unverified.
    deferred = signed(report("later@example.com", serial=5), keys["fbl"][0])
    result = run_ingest(runtime, [deferred, *garbage], outage)
    assert (result.read, result.unparseable, result.deferred, result.unverified, result.complaints) == (5, 0, 1, 4, 0)
    reasons = [d.partition("; ")[2] for _, d in events(runtime, "unverified")]
    assert reasons == [
        "claims trusted feedback loop fbl.example.net but its DKIM signature did not verify (b= value is not valid "
        "base64 (b'%%%'))",
        "claims trusted feedback loop fbl.example.net but is DKIM-signed by an unreadable signature",
        "claims trusted feedback loop fbl.example.net but its DKIM signature did not verify (missing b'a'=)",
        "claims trusted feedback loop fbl.example.net but its DKIM signature did not verify (x= value is past (b'1'))",
    ]
    assert status_of(runtime, "later@example.com") is Status.confirmed

    # DNS back: the deferred report is read now, the rest were seen before.
    result = run_ingest(runtime, [deferred, *garbage, good], dns)
    assert (result.duplicates, result.deferred, result.complaints, result.unverified) == (4, 0, 2, 0)
    assert status_of(runtime, "later@example.com") is Status.complained
    assert status_of(runtime, "reader@example.com") is Status.complained


# ------------------------------------------------------------------------ the rule itself, no database

def judged(raw: bytes, trusted: tuple[str, ...], dns) -> tuple[bool, str]:
    verdict = judge_sender(raw, email.message_from_bytes(raw), trusted, dnsfunc=dns)
    return verdict.trusted, verdict.reason


def test_a_parent_domain_signature_is_aligned_and_an_address_entry_needs_its_own_domain(keys):
    records = {b"fbl2026._domainkey.example.net.": keys["fbl"][1],
               b"fbl2026._domainkey.fbl.example.net.": keys["fbl"][1]}
    dns = lambda name, timeout=5: records.get(name)  # noqa: E731
    by_parent = signed(report("r@example.com"), keys["fbl"][0], domain=b"example.net")
    assert judged(by_parent, ("example.net",), dns)[0]
    assert not judged(by_parent, ("feedback@fbl.example.net",), dns)[0]  # the entry's domain must sign
    by_itself = signed(report("r@example.com"), keys["fbl"][0])
    assert judged(by_itself, ("feedback@fbl.example.net",), dns)[0]
    assert judged(by_itself, ("example.net",), dns)[0]
    assert not judged(by_itself, ("other@fbl.example.net",), dns)[0]
    assert not judged(by_itself, ("mail.fbl.example.net",), dns)[0]


def test_a_signature_over_part_of_the_body_does_not_count(keys, dns):
    partial = signed(report("r@example.com"), keys["fbl"][0], length=True)
    assert dkim.verify(partial, dnsfunc=dns)  # valid as DKIM ...
    trusted, reason = judged(partial, ("fbl.example.net",), dns)
    assert not trusted and "leaves From or part of the body unsigned" in reason  # ... but not for this


def test_several_from_headers_are_not_trusted(keys, dns):
    raw = signed(report("r@example.com"), keys["fbl"][0])
    doubled = raw.replace(b"From: Example", b"From: feedback@fbl.example.net\nFrom: Example", 1)
    assert judged(doubled, ("fbl.example.net",), dns) == (
        False, "sender not a trusted feedback loop (no single From address)")


@pytest.mark.parametrize(("address", "entries", "domain"), [
    ("feedback@fbl.example.net", ("fbl.example.net",), "fbl.example.net"),
    ("feedback@arf.fbl.example.net", ("fbl.example.net",), "fbl.example.net"),
    ("feedback@fbl.example.net", ("feedback@fbl.example.net",), "fbl.example.net"),
    ("FEEDBACK@FBL.example.net", ("feedback@fbl.example.net",), "fbl.example.net"),
    ("other@fbl.example.net", ("feedback@fbl.example.net",), None),
    ("feedback@notfbl.example.net", ("fbl.example.net",), None),
    ("feedback@fbl.example.net.attacker.example", ("fbl.example.net",), None),
    ("feedback@fbl.example.net", (), None),
])
def test_which_configured_entry_vouches_for_a_sender(address, entries, domain):
    assert trusted_domain(address, entries) == domain
