"""What a returned message reports (pure: no database, no network).

``classify`` reads one returned message: RFC 3464 delivery reports, the non-standard texts
flufl.bounce knows, and ARF feedback reports (a "this is spam" click relayed by a mailbox
provider); ``reported_at`` says when it happened. :mod:`nurture.bounces` applies the findings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from flufl.bounce import all_failures

log = logging.getLogger(__name__)

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
# "Message-ID: <x>" quoted at the start of a line, or "the message-id of <x>" in a report's prose.
_MESSAGE_ID_TEXT = re.compile(r"(?:^Message-ID:[ \t]*|message-id\s+of\s+)(<[^<>\s]+>)", re.I | re.M)
_MAX_IDS = 20
_DAEMON = re.compile(r"^(mailer-?daemon|mail-?daemon|postmaster)@", re.I)
_BOUNCE_SUBJECT = re.compile(r"undeliver|delivery status notification|failure notice|returned mail"
                             r"|mail delivery (failed|failure|subsystem)|delivery failure", re.I)
_AUTO_REPLY_SUBJECT = re.compile(r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response)|auto:|out of (the )?office"
                                 r"|away from|vacation|abwesenheit|r[ée]ponse automatique|respuesta autom)", re.I)
_NOT_COMPLAINTS = ("not-spam", "auth-failure", "dmarc")


@dataclass(frozen=True)
class Finding:
    """One failed recipient (or one complaint) reported by a returned message."""

    kind: str  # hard, soft, complaint
    address: str | None  # lower-cased; None when the report does not say (a redacted complaint)
    status: str | None  # enhanced status code, e.g. "5.1.1"
    message_id: str | None  # Message-ID of the message we sent, "<...>"
    diagnostic: str
    # Every Message-ID the report names as the original, best first (message_id is the first):
    # a returned copy may carry someone else's id while the threading headers carry ours.
    message_ids: tuple[str, ...] = ()


def classify(message: Message) -> list[Finding]:
    """What a returned message reports: one Finding per failed recipient, or per complaint.

    Delivery reports are read from their ``message/delivery-status`` part; other bounces through
    flufl.bounce's detectors and the reply codes in the text. Auto-replies give nothing."""
    originals = _original_message_ids(message)
    original = originals[0] if originals else None
    return [replace(f, message_ids=originals) for f in _findings(message, original)]


def _findings(message: Message, original: str | None) -> list[Finding]:
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


def reported_at(message: Message, now: datetime) -> datetime:
    """When the failure happened: the report's Date when plausible, else now. A backlog read in
    one go must not look like many bounces on one day."""
    try:
        at = parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError):
        return now
    if at is None or at.tzinfo is None or at > now or at < now - timedelta(days=90):
        return now
    return at.astimezone(timezone.utc)


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


def _original_message_ids(message: Message) -> tuple[str, ...]:
    """The Message-IDs the report gives for what we sent, best first: the returned copies and
    quoted headers, ids quoted in the text, then the threading. At most _MAX_IDS, so a report
    with a thousand References costs no more than one with ten."""
    candidates = [headers.get("Message-ID") for headers in _original_headers_all(message)]
    for part in _parts(message):
        if part.get_content_type() == "text/plain" and not part.get_filename():
            candidates += _MESSAGE_ID_TEXT.findall(_decoded(part))
    candidates += [message.get("In-Reply-To"), *reversed((message.get("References") or "").split())]
    found: list[str] = []
    for candidate in candidates:
        match = re.search(r"<[^<>\s]+>", str(candidate or ""))
        if match and match.group(0) not in found:
            found.append(match.group(0))
            if len(found) == _MAX_IDS:
                break
    return tuple(found)


def _original_headers(message: Message) -> Message | None:
    return next(iter(_original_headers_all(message)), None)


def _original_headers_all(message: Message) -> list[Message]:
    """The headers of every returned copy (message/rfc822) or quoted header block
    (text/rfc822-headers) in the report, in order."""
    found = []
    for part in _parts(message):
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(payload[0])
            else:  # an encoded message/rfc822 (not allowed, but sent): read its decoded text
                found.append(HeaderParser().parsestr(_decoded(part)))
        elif kind == "text/rfc822-headers":
            found.append(HeaderParser().parsestr(_decoded(part)))
    return found


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
