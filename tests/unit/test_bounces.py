"""classify() on returned mail as real servers write it, and the Message-ID check that keeps a
forged bounce from suppressing someone else. Fixtures: tests/fixtures/bounces/*.eml, with the
original Message-ID, the bounce's own Message-ID and its Date templated in."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from nurture.feedback.bounce_classify import Finding, classify
from nurture.feedback.bounce_sources import parse_imap_url, read_maildir_or_mbox
from nurture.feedback.bounces import is_our_message_id, outbox_ref
from nurture.sending.messages import message_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
SECRET = "unit-secret"
DOMAIN = "clearwater-psychiatry.example"
ORIGINAL = message_id(42, "seq:nurture:welcome-history", secret=SECRET, domain=DOMAIN)


def load(name: str, *, original: str = ORIGINAL, **replace: str) -> email.message.Message:
    raw = (FIXTURES / name).read_bytes()
    subs = {"@@MESSAGE_ID@@": original, "@@BOUNCE_ID@@": f"<{name}.1@mx.example>",
            "@@DATE@@": "Tue, 01 Dec 2026 15:30:00 +0000", **replace}
    for old, new in subs.items():
        raw = raw.replace(old.encode(), new.encode())
    return email.message_from_bytes(raw)


@pytest.mark.parametrize(
    ("name", "kind", "address", "status"),
    [
        ("postfix_hard_511.eml", "hard", "jane.doe@example.org", "5.1.1"),
        ("postfix_delayed_422.eml", "soft", "sam.full@example.net", "4.2.2"),
        ("exim_hard_dsn.eml", "hard", "pat.gone@example.com", "5.1.1"),  # Status 5.0.0, real code in text
        ("exim_hard_plain.eml", "hard", "lee.oldjob@example.com", "5.1.1"),
        ("exim_quota_plain.eml", "soft", "full.box@example.com", "5.2.2"),  # mailbox full: soft
        ("postfix_plain_no_dsn.eml", "hard", "gone@example.net", "5.1.1"),  # no detector knows it
        ("gmail_hard_511.eml", "hard", "no.such.person@gmail.com", "5.1.1"),
        ("outlook_hard_5110.eml", "hard", "gone.user@outlook.com", "5.1.10"),
        ("yahoo_arf_complaint.eml", "complaint", "happy.reader@yahoo.com", None),
        ("aol_arf_redacted.eml", "complaint", None, None),  # recipient redacted: Message-ID only
    ],
)
def test_each_fixture_gives_one_finding(name, kind, address, status):
    [finding] = classify(load(name))
    assert (finding.kind, finding.address, finding.status) == (kind, address, status)
    assert finding.message_id == ORIGINAL


def test_diagnostics_are_one_readable_line():
    [gmail] = classify(load("gmail_hard_511.eml"))
    assert gmail.diagnostic.startswith("550-5.1.1 The email account that you tried to reach does not exist.")
    assert "550-5.1.1 double-checking" not in gmail.diagnostic  # continuation codes folded away
    [outlook] = classify(load("outlook_hard_5110.eml"))
    assert "RESOLVER.ADR.RecipientNotFound" in outlook.diagnostic
    [postfix] = classify(load("postfix_plain_no_dsn.eml"))
    assert postfix.diagnostic.startswith("<gone@example.net>: host mail.example.net")
    assert "\n" not in postfix.diagnostic


def test_out_of_office_is_not_a_bounce():
    assert classify(load("out_of_office.eml")) == []


def test_out_of_office_without_auto_submitted_is_still_not_a_bounce():
    message = load("out_of_office.eml")
    del message["Auto-Submitted"]
    assert classify(message) == []
    del message["Subject"]
    message["Subject"] = "Out of Office: Welcome, and where ketamine came from"
    assert classify(message) == []


def test_exim_text_without_the_failed_recipients_header_falls_back_to_the_text():
    message = load("exim_hard_plain.eml")
    del message["X-Failed-Recipients"]
    [finding] = classify(message)
    assert (finding.kind, finding.address, finding.status) == ("hard", "lee.oldjob@example.com", "5.1.1")


def test_phone_numbers_in_the_quoted_original_are_not_reply_codes():
    # The quoted welcome email has "Call 555-0100" and "450 Main Street"; the reply says 550.
    message = load("exim_hard_plain.eml")
    assert classify(message)[0].kind == "hard"


def test_complaint_address_from_the_original_when_the_report_does_not_name_it():
    raw = (FIXTURES / "yahoo_arf_complaint.eml").read_text().replace(
        "Original-Rcpt-To: Happy.Reader@yahoo.com\n", "")
    [finding] = classify(email.message_from_string(raw.replace("@@MESSAGE_ID@@", ORIGINAL)))
    assert (finding.kind, finding.address) == ("complaint", "happy.reader@yahoo.com")


def test_not_spam_feedback_is_not_a_complaint():
    message = load("yahoo_arf_complaint.eml")
    raw = message.as_string().replace("Feedback-Type: abuse", "Feedback-Type: not-spam")
    assert classify(email.message_from_string(raw)) == []


def test_original_id_from_threading_headers_when_nothing_is_attached():
    message = load("exim_hard_plain.eml")
    raw = message.as_string().replace(f"Message-ID: {ORIGINAL}", "Message-ID: <unknown@elsewhere>")
    other = email.message_from_string(raw)
    assert classify(other)[0].message_id == "<unknown@elsewhere>"
    bare = email.message_from_string(
        "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
        f"In-Reply-To: {ORIGINAL}\n\n<someone@example.com>: host mx said: 550 5.1.1 User unknown\n"
    )
    [finding] = classify(bare)
    assert (finding.kind, finding.address, finding.message_id) == ("hard", "someone@example.com", ORIGINAL)


def test_every_message_id_the_report_names_is_kept_best_first():
    """Ours may be anywhere: a relay's id in the returned copy, ours only in the threading."""
    relay = "<relay.77@mx.example.org>"
    message = load("postfix_hard_511.eml", original=relay)
    message["In-Reply-To"] = ORIGINAL
    message["References"] = "<older@example.com> " + relay
    [finding] = classify(message)
    assert finding.message_id == relay
    assert finding.message_ids == (relay, ORIGINAL, "<older@example.com>")


def test_message_ids_quoted_in_a_reports_text_and_a_bound_on_how_many():
    prose = email.message_from_string(
        "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
        "References: " + " ".join(f"<r{n}@x.example>" for n in range(1000)) + "\n\n"
        f"Your message with the message-id of {ORIGINAL} could not be delivered.\n"
        "<someone@example.com>: host mx said: 550 5.1.1 User unknown\n"
    )
    [finding] = classify(prose)
    assert finding.message_ids[0] == ORIGINAL and len(finding.message_ids) == 20


def test_a_person_writing_back_is_not_a_bounce():
    message = email.message_from_string(
        f"From: Jane <jane.doe@example.org>\nSubject: Re: Welcome\nIn-Reply-To: {ORIGINAL}\n\n"
        "Thanks! Is 550 mg a lot? My old address jane@old.example does not exist any more.\n"
    )
    assert classify(message) == []


def test_a_delayed_dsn_with_several_recipients():
    raw = (FIXTURES / "postfix_delayed_422.eml").read_text().replace(
        "Will-Retry-Until: Sun,  6 Dec 2026 15:04:02 +0000 (UTC)\n",
        "Will-Retry-Until: Sun,  6 Dec 2026 15:04:02 +0000 (UTC)\n\n"
        "Final-Recipient: rfc822; other@example.net\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\n",
    )
    findings = classify(email.message_from_string(raw.replace("@@MESSAGE_ID@@", ORIGINAL)))
    assert {(f.kind, f.address, f.status) for f in findings} == {
        ("soft", "sam.full@example.net", "4.2.2"), ("hard", "other@example.net", "5.1.1")}


def test_garbage_gives_nothing():
    assert classify(email.message_from_bytes(b"\x00\xff not an email at all")) == []
    assert classify(email.message_from_bytes(b"")) == []


def test_finding_is_a_value():
    assert Finding("hard", "a@b.example", "5.1.1", None, "x") == Finding("hard", "a@b.example", "5.1.1", None, "x")


# --- Message-ID of an outbox row ------------------------------------------------------------------

def test_our_message_id_matches_its_row():
    assert outbox_ref(ORIGINAL) == 42
    assert is_our_message_id(ORIGINAL, 42, "seq:nurture:welcome-history", secret=SECRET, domain=DOMAIN)
    # MTAs sometimes change case; the From domain may have changed since sending.
    assert is_our_message_id(ORIGINAL.upper().replace("<42.", "<42."), 42, "seq:nurture:welcome-history",
                             secret=SECRET, domain=DOMAIN)
    assert is_our_message_id(ORIGINAL, 42, "seq:nurture:welcome-history", secret=SECRET, domain="new.example")


def test_forged_message_id_does_not_match():
    row, key = 42, "seq:nurture:welcome-history"
    digest = ORIGINAL[4:20]
    forged = ORIGINAL.replace(digest, "0" * 16)
    assert outbox_ref(forged) == 42  # it names a row ...
    assert not is_our_message_id(forged, row, key, secret=SECRET, domain=DOMAIN)  # ... it cannot prove it
    assert not is_our_message_id(ORIGINAL, row, "seq:nurture:how-it-may-work", secret=SECRET, domain=DOMAIN)
    assert not is_our_message_id(ORIGINAL, row, key, secret="another-secret", domain=DOMAIN)
    moved = ORIGINAL.replace("<42.", "<43.")  # the digest of row 42 presented for row 43
    assert outbox_ref(moved) == 43
    assert not is_our_message_id(moved, 43, key, secret=SECRET, domain=DOMAIN)


@pytest.mark.parametrize("text", ["<foo@bar>", "<42@x>", "42.0123456789abcdef@x", "<x.0123456789abcdef@x>",
                                  "<42.0123456789abcdeg@x>", ""])
def test_other_message_ids_name_no_row(text):
    assert outbox_ref(text) is None


# --- sources --------------------------------------------------------------------------------------

def test_imap_url():
    source = parse_imap_url("imaps://bounces%40clinic.example:p%40ss%2Fw0rd@imap.example.com/Bounces%20Box")
    assert (source.host, source.port, source.user, source.password, source.mailbox, source.starttls) == (
        "imap.example.com", 993, "bounces@clinic.example", "p@ss/w0rd", "Bounces Box", False)
    assert parse_imap_url("imaps://u:p@imap.example.com:1993").mailbox == "INBOX"
    assert parse_imap_url("imaps://u:p@imap.example.com:1993").port == 1993
    plain = parse_imap_url("imap://u:p@imap.example.com/INBOX")
    assert (plain.port, plain.starttls) == (143, True)


@pytest.mark.parametrize("url", ["https://u:p@host/INBOX", "imaps://host/INBOX", "imaps://u@host/INBOX",
                                 "imaps://u:p@/INBOX", "imaps://u:p@host:99999/INBOX", "/var/mail/bounces"])
def test_bad_imap_urls_are_refused(url):
    with pytest.raises(ValueError):
        parse_imap_url(url)


def test_neither_maildir_nor_mbox_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not an mbox"):
        list(read_maildir_or_mbox(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="not a Maildir"):
        list(read_maildir_or_mbox(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        list(read_maildir_or_mbox(tmp_path / "missing"))
