"""MIME bytes for one email: headers, Message-ID, List-Unsubscribe (RFC 8058), optional DKIM.

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
from nurture.rendering import Rendered

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Headers DKIM signs; h= must cover both List-Unsubscribe headers (RFC 8058, section 4).
DKIM_HEADERS = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Unsubscribe",
                b"List-Unsubscribe-Post", b"List-Id", b"MIME-Version", b"Content-Type")


@dataclass(frozen=True)
class Dkim:
    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def from_file(cls, path: Path, selector: str, domain: str) -> Dkim:
        return cls(selector=selector, domain=domain, private_key=path.read_bytes())

    def sign(self, data: bytes) -> bytes:
        import dkim

        signature = dkim.sign(
            data, self.selector.encode(), self.domain.encode(), self.private_key,
            include_headers=list(DKIM_HEADERS),
        )
        return signature + data


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
    if value.isascii() and len(value) < 900:
        return value
    return _encoded_words(value)


@lru_cache(maxsize=256)
def _address_header(value: str) -> str:
    # Cached on the raw value: the From header is the same for every recipient, and parsing it
    # was 15% of building a message.
    return formataddr(parseaddr(value), charset="utf-8")


@lru_cache(maxsize=1024)
def _encoded_words(value: str) -> str:
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


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
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if list_id:
        headers["List-Id"] = list_id
    headers.update(extra_headers or {})
    boundary = "=_nurture_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    head = "".join(f"{name}: {_header_value(name, value)}\r\n" for name, value in headers.items())
    data = b"".join((
        head.encode("utf-8"),
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
        _part(boundary, "plain", rendered.text),
        _part(boundary, "html", rendered.html),
        f"--{boundary}--\r\n".encode(),
    ))
    return dkim.sign(data) if dkim else data


def _part(boundary: str, subtype: str, body: str) -> bytes:
    return b"".join((
        f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode(),
        _qp(body),
        b"\r\n",
    ))
