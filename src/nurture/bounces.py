"""Returned mail and complaints: what came back after the SMTP conversation, and who to suppress.

``classify`` reads one returned message (pure): RFC 3464 delivery reports, the non-standard texts
flufl.bounce knows, and ARF feedback reports (a "this is spam" click relayed by a mailbox
provider). ``ingest`` applies the findings, one short transaction per returned message, and leaves
a marker per message so reading the same mailbox again changes nothing. A finding is matched to
the outbox row by the original Message-ID (its HMAC digest proves we sent it), else to the
subscriber by address.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import imaplib
import logging
import mailbox
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flufl.bounce import all_failures
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from nurture import outbox
from nurture.db import transaction
from nurture.messages import message_id as outbox_message_id
from nurture.messages import sender_domain
from nurture.models import Event, OutboxMessage, Status, Subscriber
from nurture.subscribers import find_by_email, mark_status
from nurture.validation import InvalidInput, normalise_email

log = logging.getLogger(__name__)

SOFT_LIMIT = 3  # soft bounces (from distinct sent messages) ...
SOFT_WINDOW = timedelta(days=15)  # ... within this window suppress the address
SEEN = "bounce_seen"
_ACTIVE = (Status.pending, Status.confirmed)

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
# A bare SMTP reply code; not one followed by more digits (a phone number such as 555-0100).
_BASIC = re.compile(r"(?:^|[\s:;'(\[])([45][0-5]\d)(?:[ -](?!\d{3})|$)", re.M)
_SOFT_TEXT = re.compile(r"over\s*quota|quota\s*exceeded|mailbox\s*(?:is\s*)?full|insufficient\s*storage"
                        r"|exceeded\s*storage", re.I)
_HARD_TEXT = re.compile(r"user\s*unknown|unknown\s*user|no\s*such\s*user|mailbox\s*unavailable|does\s*not\s*exist"
                        r"|recipient\s*not\s*found|address\s*rejected|address\s*not\s*found", re.I)
# Where a plain-text bounce starts quoting the original message: codes below it are not the reply.
_QUOTE_START = re.compile(r"^[ \t]*-{2,}.*(copy of (the|your) message|original message|returned mail)"
                          r"|^[ \t]*(original message (headers|follows)|--- Below this line)", re.I | re.M)
_CONTINUED = re.compile(r"\n\s*\d{3}[- ](?:\d\.\d{1,3}\.\d{1,3}\s)?")
_MESSAGE_ID_LINE = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.I | re.M)
_DAEMON = re.compile(r"^(mailer-?daemon|mail-?daemon|postmaster)@", re.I)
_BOUNCE_SUBJECT = re.compile(r"undeliver|delivery status notification|failure notice|returned mail"
                             r"|mail delivery (failed|failure|subsystem)|delivery failure", re.I)
_AUTO_REPLY_SUBJECT = re.compile(r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response)|auto:|out of (the )?office"
                                 r"|away from|vacation|abwesenheit|r[ée]ponse automatique|respuesta autom)", re.I)
_OUR_ID = re.compile(r"^<(\d+)\.([0-9a-f]{16})@([^<>@\s]+)>$", re.I)
_NOT_COMPLAINTS = ("not-spam", "auth-failure", "dmarc")


@dataclass(frozen=True)
class Finding:
    """One failed recipient (or one complaint) reported by a returned message."""

    kind: str  # hard, soft, complaint
    address: str | None  # lower-cased; None when the report does not say (a redacted complaint)
    status: str | None  # enhanced status code, e.g. "5.1.1"
    message_id: str | None  # Message-ID of the message we sent, "<...>"
    diagnostic: str


@dataclass
class IngestReport:
    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unmatched: int = 0  # findings that name no subscriber we know
    duplicates: int = 0  # returned messages ingested before
    unparseable: int = 0
    ignored: int = 0  # not a bounce or complaint (auto-replies, anything else in the mailbox)
    suppressed: int = 0  # subscribers newly marked bounced or complained

    def summary(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


# --- classify -----------------------------------------------------------------------------------

def classify(message: Message) -> list[Finding]:
    """What a returned message reports: one Finding per failed recipient, or per complaint.

    Delivery reports are read from their ``message/delivery-status`` part; other bounces through
    flufl.bounce's detectors and the reply codes in the text. Auto-replies give nothing."""
    original = _original_message_id(message)
    if _is_feedback_report(message):
        return _complaints(message, original)
    findings = _dsn_findings(message, original)
    if not findings and _is_auto_reply(message):
        return []
    body = _notification_text(message)
    known = {f.address for f in findings}
    temporary, permanent = _flufl_failures(message)
    for raw in sorted(temporary | permanent):
        address = _address(raw.decode("ascii", "replace"))
        if address and address not in known:
            known.add(address)
            findings.append(_text_finding(address, body, original, temporary=raw in temporary - permanent))
    if not findings and (_from_daemon(message) or _BOUNCE_SUBJECT.search(_header(message, "Subject"))):
        finding = _daemon_finding(message, body, original)
        if finding:
            findings.append(finding)
    return findings


def _complaints(message: Message, original: str | None) -> list[Finding]:
    report = next((_header_block(p) for p in _parts(message)
                   if p.get_content_type() == "message/feedback-report"), Message())
    feedback_type = (report.get("Feedback-Type") or "abuse").strip().lower()
    if feedback_type in _NOT_COMPLAINTS:
        return []
    address = _address(report.get("Original-Rcpt-To") or "")
    if address is None:
        headers = _original_headers(message)
        recipients = getaddresses(headers.get_all("To", [])) if headers is not None else []
        address = _address(recipients[0][1]) if len(recipients) == 1 else None
    agent = (report.get("User-Agent") or "").strip()
    return [Finding("complaint", address, None, original, f"feedback-type {feedback_type}; {agent}".strip("; "))]


def _dsn_findings(message: Message, original: str | None) -> list[Finding]:
    findings: dict[str, Finding] = {}
    for part in _parts(message):
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            action = (block.get("Action") or "").strip().lower()
            raw = block.get("Original-Recipient") or block.get("Final-Recipient") or ""
            address = _address(raw.rpartition(";")[2])
            if not action or address is None:
                continue  # the per-message block, or a recipient we cannot name
            code = block.get("Diagnostic-Code") or ""
            # Multi-line SMTP replies repeat "550-5.1.1" on each folded line; keep the words.
            diagnostic = _oneline(_CONTINUED.sub(" ", code.partition(";")[2] or code))
            status = _status(block.get("Status"), diagnostic)
            kind = _kind(action, status, diagnostic)
            if kind and address not in findings:
                findings[address] = Finding(kind, address, status, original, diagnostic)
    return list(findings.values())


def _status(field: str | None, diagnostic: str) -> str | None:
    """The enhanced status code; Exim and others write a vague X.0.0 and the real one in the text."""
    match = _ENHANCED.search(field or "")
    status = ".".join(match.groups()) if match else None
    if status is None or status.endswith(".0.0"):
        detail = _ENHANCED.search(diagnostic)
        if detail and (status is None or detail.group(1) == status[0]):
            return ".".join(detail.groups())
    return status


def _kind(action: str, status: str | None, diagnostic: str) -> str | None:
    """hard or soft, or None for a recipient that did not fail (delivered, relayed, expanded).

    A full mailbox counts as soft even as 5.2.2: such addresses often recover, and three soft
    bounces in a row suppress one that does not."""
    if action.startswith(("delivered", "relayed", "expanded")) or (status or "").startswith("2"):
        return None
    if action.startswith("delayed") or (status or "").startswith("4"):
        return "soft"
    if status == "5.2.2" or _SOFT_TEXT.search(diagnostic):
        return "soft"
    if (status or "").startswith("5") or action.startswith(("fail", "error")):
        return "hard"
    return None


def _text_finding(address: str, body: str, original: str | None, *, temporary: bool) -> Finding:
    """A failed address flufl.bounce found; hard or soft from the reply text near it."""
    at = body.lower().find(address)
    start = body.rfind("\n", 0, at) + 1
    window = body[start:start + 800] if at >= 0 else body
    line = _reply_line(window) or _reply_line(body) or ""
    status = _status(None, line or window)
    basic = _BASIC.search(line)
    soft = temporary or bool(_SOFT_TEXT.search(line)) or status == "5.2.2" or (status or "").startswith("4") \
        or (status is None and basic is not None and basic.group(1).startswith("4"))
    return Finding("soft" if soft else "hard", address, status, original, line)


def _daemon_finding(message: Message, body: str, original: str | None) -> Finding | None:
    """A mailer-daemon text no detector knows: trust it only with a reply code and someone to blame."""
    line = _reply_line(body)
    if not line or not (_ENHANCED.search(line) or _BASIC.search(line)):
        return None
    named = re.search(r"<([^<>\s]+@[^<>\s]+)>", line) or re.search(r"<([^<>\s]+@[^<>\s]+)>", body)
    address = _address(named.group(1)) if named else None
    if address is None:
        headers = _original_headers(message)
        recipients = getaddresses(headers.get_all("To", [])) if headers is not None else []
        address = _address(recipients[0][1]) if len(recipients) == 1 else None
    if address is None and original is None:
        return None
    return _text_finding(address, body, original, temporary=False) if address else \
        Finding("hard" if not _SOFT_TEXT.search(line) else "soft", None, _status(None, line), original, line)


def _reply_line(text: str) -> str | None:
    """The first line (with its indented continuation) that carries a reply code or a known phrase."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _ENHANCED.search(line) or _BASIC.search(line) or _SOFT_TEXT.search(line) or _HARD_TEXT.search(line):
            more = []
            for follow in lines[i + 1:i + 4]:
                if not follow.startswith((" ", "\t")) or not follow.strip():
                    break
                more.append(follow)
            return _oneline(" ".join([line, *more]))
    return None


def _is_feedback_report(message: Message) -> bool:
    if message.get_content_type() == "multipart/report" and \
            str(message.get_param("report-type") or "").lower() == "feedback-report":
        return True
    return any(p.get_content_type() == "message/feedback-report" for p in _parts(message))


def _is_auto_reply(message: Message) -> bool:
    """An out-of-office or other auto-reply from a person's mailbox (RFC 3834 and common habits)."""
    if _from_daemon(message) or message.get("X-Failed-Recipients"):
        return False
    if any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponse")):
        return True
    if _header(message, "Precedence").lower() == "auto_reply":
        return True
    if _header(message, "Auto-Submitted").lower().startswith("auto-replied"):
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(_header(message, "Subject")))


def _from_daemon(message: Message) -> bool:
    return bool(_DAEMON.match(parseaddr(_header(message, "From"))[1]))


def _flufl_failures(message: Message) -> tuple[frozenset[bytes], frozenset[bytes]]:
    try:
        return all_failures(message)
    except Exception:  # noqa: BLE001 - a heuristic detector tripping on odd input is not our error
        log.warning("flufl.bounce failed on a message", exc_info=True)
        return frozenset(), frozenset()


def _original_message_id(message: Message) -> str | None:
    """The Message-ID of what we sent: the returned copy, its quoted headers, or the threading."""
    headers = _original_headers(message)
    candidates = [headers.get("Message-ID")] if headers is not None else []
    for part in _parts(message):
        if part.get_content_type() == "text/plain" and not part.get_filename():
            candidates += _MESSAGE_ID_LINE.findall(_decoded(part))
    candidates += [message.get("In-Reply-To"), *reversed((message.get("References") or "").split())]
    for candidate in candidates:
        match = re.search(r"<[^<>\s]+>", candidate or "")
        if match:
            return match.group(0)
    return None


def _original_headers(message: Message) -> Message | None:
    for part in _parts(message):
        kind = part.get_content_type()
        if kind == "message/rfc822" and isinstance(part.get_payload(), list) and part.get_payload():
            return part.get_payload()[0]
        if kind == "text/rfc822-headers":
            return HeaderParser().parsestr(_decoded(part))
    return None


def _parts(message: Message) -> Iterator[Message]:
    """Every part, but not the parts inside a returned copy of our own message."""
    yield message
    # message/* parts (rfc822, delivery-status, feedback-report) are read by whoever wants them.
    if message.get_content_maintype() == "message" or not message.is_multipart():
        return
    for part in message.get_payload():
        if isinstance(part, Message):
            yield from _parts(part)


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(chunk.strip() + "\n") for chunk in re.split(r"\n\s*\n", text) if chunk.strip()]


def _header_block(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return payload[0]
    return HeaderParser().parsestr(_decoded(part))


def _notification_text(message: Message) -> str:
    """The human-readable report, without the quoted original (whose text has numbers of its own)."""
    plain, html = [], []
    for part in _parts(message):
        if part.get_content_maintype() != "text" or part.get_content_type() == "text/rfc822-headers":
            continue
        (plain if part.get_content_type() == "text/plain" else html).append(_decoded(part))
    text = "\n".join(plain) or re.sub(r"<[^>]+>", " ", "\n".join(html))
    cut = _QUOTE_START.search(text)
    return text[:cut.start()] if cut else text


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, ValueError, UnicodeError):
        return str(value)


def _address(raw: str) -> str | None:
    address = parseaddr(raw.strip())[1].strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    return address if at and local and "." in domain else None


def _oneline(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


# --- matching -----------------------------------------------------------------------------------

def outbox_ref(message_id: str) -> int | None:
    """The outbox row id a Message-ID of ours names, before any check that we really sent it."""
    match = _OUR_ID.match(message_id.strip())
    return int(match.group(1)) if match else None


def is_our_message_id(message_id: str, outbox_id: int, key: str, *, secret: str, domain: str) -> bool:
    """Is this the Message-ID of outbox row ``outbox_id`` (with ``key``)? A forged or guessed id
    fails the HMAC digest. The domain is not compared: it is not secret, and changing the From
    address must not orphan the bounces of mail already sent."""
    expected = outbox_message_id(outbox_id, key, secret=secret, domain=domain)
    return hmac.compare_digest(message_id.strip().lower().partition("@")[0],
                               expected.lower().partition("@")[0])


# --- ingest -------------------------------------------------------------------------------------

def ingest(
    sessions: sessionmaker[Session],
    messages: Iterable[bytes],
    *,
    now: datetime,
    secret: str,
    from_header: str,
) -> IngestReport:
    """Apply what returned messages report: hard bounces and complaints suppress at once; soft
    bounces suppress at the third (from distinct messages) within 15 days. One short transaction
    per returned message; a message seen before (same Message-ID, else same bytes) is skipped."""
    report = IngestReport()
    domain = sender_domain(from_header)
    for raw in messages:
        report.read += 1
        try:
            message = email.message_from_bytes(raw)
            if not raw.strip() or not message.keys():
                raise ValueError("no headers")
            findings = classify(message)
        except Exception as exc:  # noqa: BLE001 - one broken message must not stop the run
            log.warning("unparseable returned message: %s", exc)
            report.unparseable += 1
            continue
        if not findings:
            report.ignored += 1
            continue
        counts: dict[str, int] = {}
        marker = _marker(message, raw)
        with transaction(sessions) as session:
            if _seen(session, marker):
                counts["duplicates"] = 1
            else:
                when = _reported_at(message, now)
                done: set[tuple[int, str]] = set()
                for finding in findings:
                    _apply(session, finding, counts, done, now=now, when=when, secret=secret, domain=domain)
                outbox.record_event(session, SEEN, now, detail=marker)
        for name, value in counts.items():
            setattr(report, name, getattr(report, name) + value)
    return report


def _apply(session: Session, finding: Finding, counts: dict[str, int], done: set[tuple[int, str]], *,
           now: datetime, when: datetime, secret: str, domain: str) -> None:
    subscriber, outbox_id = _match(session, finding, secret=secret, domain=domain)
    if subscriber is None:
        counts["unmatched"] = counts.get("unmatched", 0) + 1
        return
    if (subscriber.id, finding.kind) in done:
        return
    done.add((subscriber.id, finding.kind))
    counter = {"hard": "hard", "soft": "soft", "complaint": "complaints"}[finding.kind]
    counts[counter] = counts.get(counter, 0) + 1
    detail = f"{finding.status or '-'} {finding.diagnostic}".strip()
    kind = {"hard": "bounced", "soft": "soft_bounce", "complaint": "complained"}[finding.kind]
    outbox.record_event(session, kind, when, subscriber_id=subscriber.id, outbox_id=outbox_id, detail=detail)
    # Never downgrade: unsubscribed and erased stay so; a complaint outranks a bounce.
    if finding.kind == "complaint":
        new = Status.complained if subscriber.status in (*_ACTIVE, Status.bounced) else None
    elif subscriber.status not in _ACTIVE:
        new = None
    elif finding.kind == "hard":
        new = Status.bounced
    elif _soft_streak(session, subscriber.id, when):
        new = Status.bounced
        outbox.record_event(session, "bounced", when, subscriber_id=subscriber.id, outbox_id=outbox_id,
                            detail=f"{SOFT_LIMIT} soft bounces within {SOFT_WINDOW.days} days; last: {detail}")
    else:
        new = None
    if new is not None:
        mark_status(session, subscriber.id, new, now)
        counts["suppressed"] = counts.get("suppressed", 0) + 1


def _match(session: Session, finding: Finding, *, secret: str, domain: str) -> tuple[Subscriber | None, int | None]:
    """The subscriber (locked) and outbox row a finding is about: by Message-ID, else by address."""
    ref = outbox_ref(finding.message_id) if finding.message_id else None
    if ref is not None:
        row = session.get(OutboxMessage, ref)
        if row is not None and is_our_message_id(finding.message_id, row.id, row.key, secret=secret, domain=domain):
            return _locked(session, row.subscriber_id), row.id
    if finding.address:
        try:
            found = find_by_email(session, normalise_email(finding.address))
        except InvalidInput:
            return None, None
        if found is not None:
            return _locked(session, found.id), None
    return None, None


def _locked(session: Session, subscriber_id: int) -> Subscriber | None:
    # FOR UPDATE on PostgreSQL so an unsubscribe cannot commit between our read and our write;
    # SQLite's BEGIN IMMEDIATE already serialises writers.
    return session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id)
                          .with_for_update().execution_options(populate_existing=True))


def _soft_streak(session: Session, subscriber_id: int, when: datetime) -> bool:
    """SOFT_LIMIT soft bounces of distinct sent messages within any SOFT_WINDOW around ``when``.

    Counted by sent message, because an MTA may warn several times about one delayed message;
    and over any window, because a mailbox backlog is not read in date order."""
    rows = session.execute(
        select(Event.id, Event.outbox_id, Event.created_at).where(
            Event.kind == "soft_bounce", Event.subscriber_id == subscriber_id,
            Event.created_at >= when - SOFT_WINDOW, Event.created_at <= when + SOFT_WINDOW,
        )
    )
    first_seen: dict[object, datetime] = {}
    for event_id, outbox_id, at in rows:
        key = ("o", outbox_id) if outbox_id is not None else ("e", event_id)
        first_seen[key] = min(at, first_seen.get(key, at))
    times = sorted(first_seen.values())
    return any(times[i + SOFT_LIMIT - 1] - times[i] <= SOFT_WINDOW for i in range(len(times) - SOFT_LIMIT + 1))


def _marker(message: Message, raw: bytes) -> str:
    """What identifies a returned message across runs: its own Message-ID, else its bytes."""
    own = (message.get("Message-ID") or "").strip()
    return hashlib.sha256(("id:" + own).encode() if own else raw).hexdigest()


def _seen(session: Session, marker: str) -> bool:
    if session.get_bind().dialect.name == "postgresql":
        # Two ingests of one mailbox at once: the second waits here, then sees the first's marker.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": int.from_bytes(bytes.fromhex(marker[:16]), "big", signed=True)})
    return session.scalar(select(Event.id).where(Event.kind == SEEN, Event.detail == marker).limit(1)) is not None


def _reported_at(message: Message, now: datetime) -> datetime:
    """When the failure happened: the report's Date when plausible, else now. A backlog read in
    one go must not look like many bounces on one day."""
    try:
        at = parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError):
        return now
    if at is None or at.tzinfo is None or at > now or at < now - timedelta(days=90):
        return now
    return at.astimezone(timezone.utc)


# --- sources ------------------------------------------------------------------------------------

def read_maildir_or_mbox(path: Path) -> Iterator[bytes]:
    """The messages of a Maildir (a directory with cur/, new/, tmp/) or an mbox file."""
    path = Path(path)
    if path.is_dir():
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise ValueError(f"{path} is a directory but not a Maildir (no cur/, new/ and tmp/)")
        box: mailbox.Mailbox = mailbox.Maildir(path, factory=None, create=False)
    elif path.is_file():
        with path.open("rb") as handle:
            head = handle.read(5)
        if head and head != b"From ":
            raise ValueError(f"{path} is not an mbox file (it does not start with a 'From ' line)")
        box = mailbox.mbox(path, create=False)
    else:
        raise ValueError(f"{path} does not exist")
    # Maildir names start with the delivery time, so sorted keys read roughly oldest first.
    for key in sorted(box.keys()):
        yield box.get_bytes(key)


@dataclass(frozen=True)
class ImapSource:
    host: str
    port: int
    user: str
    password: str
    mailbox: str
    starttls: bool  # imap:// upgrades with STARTTLS; a password never crosses the wire in clear


def parse_imap_url(url: str) -> ImapSource:
    """``imaps://user:pass@host[:port]/MAILBOX`` (or ``imap://`` with STARTTLS); percent-escapes
    in the user and password are decoded; the mailbox defaults to INBOX."""
    parts = urlsplit(url)
    if parts.scheme not in ("imaps", "imap"):
        raise ValueError("IMAP URL must start with imaps:// (or imap:// for STARTTLS)")
    if not parts.hostname or not parts.username or parts.password is None:
        raise ValueError("IMAP URL needs user, password and host: imaps://user:pass@host/INBOX")
    port = parts.port or (993 if parts.scheme == "imaps" else 143)
    return ImapSource(parts.hostname, port, unquote(parts.username), unquote(parts.password),
                      unquote(parts.path.lstrip("/")) or "INBOX", parts.scheme == "imap")


def read_imap(url: str, *, timeout: float = 60.0) -> Iterator[bytes]:
    """Unseen messages of an IMAP mailbox, read-only (nothing is flagged or moved); ingest's
    markers make reading them again on the next run harmless."""
    source = parse_imap_url(url)
    context = ssl.create_default_context()
    if source.starttls:
        client = imaplib.IMAP4(source.host, source.port, timeout=timeout)
        client.starttls(context)
    else:
        client = imaplib.IMAP4_SSL(source.host, source.port, ssl_context=context, timeout=timeout)
    try:
        client.login(source.user, source.password)
        status, _ = client.select('"' + source.mailbox.replace('"', r'\"') + '"', readonly=True)
        if status != "OK":
            raise ValueError(f"cannot open IMAP mailbox {source.mailbox!r}")
        _, data = client.search(None, "UNSEEN")
        for number in data[0].split():
            _, parts = client.fetch(number, "(BODY.PEEK[])")
            for part in parts:
                if isinstance(part, tuple):
                    yield part[1]
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
