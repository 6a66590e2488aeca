"""MIME bytes for one email: headers, Message-ID, List-Unsubscribe (RFC 8058), optional DKIM.

Mail goes out in three streams (:class:`Streams`), so that mailbox providers judge each on its own:
the sequence and the newsletter (marketing: their own List-Id and Feedback-ID) and transactional
mail (the confirmation: no List-Id, ``Auto-Submitted: auto-generated``, optionally its own From and
Return-Path). What a stream's messages share is built once per process; per message only the
recipient's values are added.

Every header value comes from code or from validated data and is checked for control characters
before it is encoded, so nothing a subscriber typed can add a header (tests/unit/test_messages.py).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path

from nurture.addresses import wire_address
from nurture.content.rendering import Rendered
from nurture.message_key import Kind, MessageKey, kind_of

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Headers DKIM signs when present; h= must cover both List-Unsubscribe headers (RFC 8058, section 4),
# and Gmail's feedback loop reads Feedback-ID only when it is signed.
DKIM_HEADERS = ("From", "Reply-To", "Cc", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe",
                "List-Unsubscribe-Post", "List-Id", "Feedback-ID", "Auto-Submitted", "MIME-Version",
                "Content-Type")
# Oversigned: named once more in h= than they occur, so a second copy prepended on the way (which
# many clients would show instead of ours) breaks the signature. These four always, even when absent
# (a List-Unsubscribe cannot be added to the confirmation); Reply-To and Cc when present.
OVERSIGNED = ("From", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post")
OVERSIGNED_WHEN_PRESENT = ("Reply-To", "Cc")


@lru_cache(maxsize=64)
def dkim_header_list(present: tuple[str, ...]) -> tuple[bytes, ...]:
    """The h= list for a message with these header names: a handful of shapes per process."""
    signed = [name for name in DKIM_HEADERS if name in present]
    extra = list(OVERSIGNED) + [name for name in OVERSIGNED_WHEN_PRESENT if name in present]
    return tuple(name.encode() for name in signed + extra)


@dataclass(frozen=True)
class Dkim:
    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def from_file(cls, path: Path, selector: str, domain: str) -> Dkim:
        return cls(selector=selector, domain=domain, private_key=path.read_bytes())

    def sign(self, data: bytes, headers: tuple[bytes, ...]) -> bytes:
        """``data`` with a DKIM-Signature over ``headers`` (the h= list, see dkim_header_list)."""
        import dkim

        signature = dkim.sign(data, self.selector.encode(), self.domain.encode(), self.private_key,
                              include_headers=list(headers))
        return signature + data


@dataclass(frozen=True)
class Stream:
    """One stream of mail and what all its messages share, built once (:func:`make_streams`)."""

    name: str  # "sequence", "newsletter" or "transactional"
    from_header: str
    return_path: str  # the envelope sender: where this stream's bounces go
    list_id: str | None = None  # marketing streams only
    headers: tuple[tuple[str, str], ...] = ()  # the same on every message (Auto-Submitted)
    feedback_sender: str | None = None  # the last field of Feedback-ID; None: no Feedback-ID
    unsubscribe_mailbox: str | None = None  # the address of List-Unsubscribe's mailto: (marketing)

    def message_headers(self, key: str | MessageKey | None) -> dict[str, str]:
        """This stream's own headers for the outbox row ``key``: the constant ones and, on marketing
        mail, Gmail's Feedback-ID (campaign:stream:sender, so spam rates are reported per campaign).
        A preview (no key) has no campaign."""
        headers = dict(self.headers)
        if self.feedback_sender and key is not None:
            headers["Feedback-ID"] = f"{campaign(key)}:{self.name}:{self.feedback_sender}"
        return headers


@dataclass(frozen=True)
class Streams:
    sequence: Stream
    newsletter: Stream
    transactional: Stream

    def for_key(self, key: str | MessageKey) -> Stream:
        """The stream of an outbox row, by the kind of its key."""
        kind = kind_of(key)
        if kind is Kind.SEQUENCE_STEP:
            return self.sequence
        if kind is Kind.BROADCAST:
            return self.newsletter
        return self.transactional


def campaign(key: str | MessageKey) -> str:
    """Feedback-ID's campaign field for an outbox key: ``seq:nurture:welcome`` -> ``nurture.welcome``,
    ``bcast:12`` -> ``newsletter.12`` (no colons: they separate Feedback-ID's fields)."""
    key = key if isinstance(key, MessageKey) else MessageKey.parse(key)
    if key.kind is Kind.SEQUENCE_STEP:
        return f"{key.sequence}.{key.step}"
    if key.kind is Kind.BROADCAST:
        return f"newsletter.{key.broadcast_id}"
    return f"confirm.{key.round}"


def make_streams(*, from_header: str, list_name: str, sequence: str, transactional_from: str | None = None,
                 transactional_return_path: str | None = None) -> Streams:
    """The three streams from the settings. Marketing mail bounces to its From address, the mailbox
    the bounce reader watches, so the List-Unsubscribe mailto: goes there too; transactional mail may
    have a From and Return-Path of its own."""
    domain = sender_domain(from_header).encode("idna").decode("ascii")
    bounces_to = parseaddr(from_header)[1]
    marketing = dict(from_header=from_header, return_path=bounces_to, feedback_sender=domain,
                     unsubscribe_mailbox=bounces_to)
    transactional = transactional_from or from_header
    return Streams(
        sequence=Stream("sequence", list_id=_list_id(list_name, f"{sequence}.{domain}"), **marketing),
        newsletter=Stream("newsletter", list_id=_list_id(f"{list_name} newsletter", f"newsletter.{domain}"),
                          **marketing),
        transactional=Stream("transactional", from_header=transactional,
                             return_path=transactional_return_path or parseaddr(transactional)[1],
                             headers=(("Auto-Submitted", "auto-generated"),)),
    )


def _list_id(name: str, list_id: str) -> str:
    # The name is a phrase: quoted or RFC 2047-encoded as it needs, never the <id> part.
    return formataddr((name, list_id), charset="utf-8")


def list_unsubscribe(url: str, mailbox: str | None) -> str:
    """List-Unsubscribe: the one-click URL, then a mailto: whose subject carries the same signed token
    (the URL's last segment), so a mail to it unsubscribes exactly that person (bounces.ingest)."""
    if not mailbox:
        return f"<{url}>"
    token = url.rstrip("/").rpartition("/")[2]
    return f"<{url}>, <mailto:{mailbox}?subject=unsubscribe%20{token}>"


class HeaderInjection(ValueError):
    """A header value would have become more than one header line."""


def _header_value(name: str, value: str) -> str:
    """A header value as it goes on the wire: one line, RFC 2047-encoded when not ASCII.

    Values are checked before encoding, so nothing (not even an encoded-word such as
    ``=?utf-8?q?x=0D=0ABcc=3A_y?=``, which the email package would decode) can add a header."""
    if _CONTROL.search(value):
        raise HeaderInjection(f"{name}: control character in header value")
    if name in ("From", "Reply-To"):
        return _address_header(value)
    if name == "To":
        return value  # _recipient made it, already in its wire form
    if name == "List-Unsubscribe":
        # Folded where it has a space, so no parser ever needs to refold it (which would break DKIM).
        return value.replace(">, <", ">,\r\n <")
    if value.isascii() and len(value) < 900:
        return value
    return _encoded_words(name, value)


@lru_cache(maxsize=256)
def _address_header(value: str) -> str:
    # Cached on the raw value: the From header is the same for every recipient, and parsing it
    # was 15% of building a message.
    return formataddr(parseaddr(value), charset="utf-8")


@lru_cache(maxsize=1024)
def _encoded_words(name: str, value: str) -> str:
    # Every line within 78 octets, the field name included: a parser refolds (and re-encodes) a
    # longer one when it writes the message again, which breaks the DKIM signature.
    return Header(value, "utf-8", maxlinelen=76, header_name=name).encode(linesep="\r\n")


def _recipient(address: str) -> str:
    """The To header for one address: the domain as IDNA A-labels; a non-ASCII local part as
    UTF-8 (RFC 6532), never as an RFC 2047 encoded-word, which is not valid in an address. Such
    a message can only travel under SMTPUTF8, which the transport checks."""
    # "=?" would read as an RFC 2047 encoded-word to some parsers, which decode it into anything.
    if _CONTROL.search(address) or any(c in address for c in ",<>\"") or "=?" in address:
        raise HeaderInjection("To: not a single plain address")
    return wire_address(address).text


def _qp(text: str) -> bytes:
    """UTF-8, quoted-printable (lines of at most 76 octets), CRLF line ends.

    Encoded line by line through a cache: quoted-printable never carries state across a hard
    line break, and all but a few lines of an email (those holding a name or a link) are the
    same for every recipient. Encoding the whole body was most of the cost of building a
    message; the result is byte for byte the same (tests compare it with the whole-body way)."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return b"\r\n".join(map(_qp_line, normalised.split(b"\n")))


@lru_cache(maxsize=4096)
def _qp_line(line: bytes) -> bytes:
    # Lines used by every message stay recent, so a flood of one-off lines cannot evict them.
    return binascii.b2a_qp(line, istext=True).replace(b"\n", b"\r\n")


def sender_domain(from_header: str) -> str:
    return parseaddr(from_header)[1].rpartition("@")[2] or "localhost"


def message_id(outbox_id: int, key: str, *, secret: str, domain: str) -> str:
    """The Message-ID of an outbox row: the same on every attempt, so a resend after a crash is the
    same message and mailbox providers fold it. The digest keeps ids unguessable across rows."""
    digest = hmac.new(secret.encode(), f"{outbox_id}:{key}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"<{outbox_id}.{digest}@{domain}>"


def build_message(
    rendered: Rendered,
    *,
    from_header: str,
    to: str,
    message_id: str,
    date: datetime,
    unsubscribe_url: str | None,
    list_id: str | None,
    unsubscribe_mailbox: str | None = None,
    extra_headers: dict[str, str] | None = None,
    dkim: Dkim | None = None,
) -> bytes:
    """multipart/alternative (text first, then HTML), UTF-8, quoted-printable, CRLF line ends.

    Written directly rather than through ``email.message``: the structure never changes, and the
    email package costs about 4 ms a message, twice the rest of sending. Tests parse the result
    with the standard ``email`` parser."""
    headers = {
        "From": from_header,
        "To": _recipient(to),
        "Subject": rendered.subject,
        "Date": format_datetime(date),
        "Message-ID": message_id,
    }
    if unsubscribe_url:
        headers["List-Unsubscribe"] = list_unsubscribe(unsubscribe_url, unsubscribe_mailbox)
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if list_id:
        headers["List-Id"] = list_id
    headers.update(extra_headers or {})
    boundary = "=_nurture_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    head = "".join(f"{name}: {_header_value(name, value)}\r\n" for name, value in headers.items())
    data = b"".join((
        head.encode("utf-8"),
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode(),
        _part(boundary, "plain", rendered.text),
        _part(boundary, "html", rendered.html),
        f"--{boundary}--\r\n".encode(),
    ))
    return dkim.sign(data, dkim_header_list((*headers, "MIME-Version", "Content-Type"))) if dkim else data


def _part(boundary: str, subtype: str, body: str) -> bytes:
    return b"".join((
        f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode(),
        _qp(body),
        b"\r\n",
    ))
