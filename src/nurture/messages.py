"""MIME bytes for one email: headers, Message-ID, List-Unsubscribe (RFC 8058), optional DKIM.

Every header value comes from code or from validated data; the ``email`` package refuses CR/LF
in a header value, so nothing a subscriber typed can add a header (tests/unit/test_messages.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path

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


def _set_header(message: EmailMessage, name: str, value: str) -> None:
    """Set a header, refusing anything that could smuggle in another header.

    The email package decodes RFC 2047 encoded-words in values it is given, so a value like
    ``=?utf-8?q?x=0D=0ABcc=3A_y?=`` turns into a line break on output. Check the raw value for
    control characters and, after parsing, the value the package will actually write."""
    if _CONTROL.search(value):
        raise HeaderInjection(f"{name}: control character in header value")
    message[name] = value
    if _CONTROL.search(str(message[name])):
        del message[name]
        raise HeaderInjection(f"{name}: encoded line break in header value")


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
    """multipart/alternative (text first, then HTML), UTF-8, quoted-printable, CRLF line ends."""
    message = EmailMessage(policy=SMTP)
    headers = {
        "From": from_header,
        "To": to,
        "Subject": rendered.subject,
        "Date": format_datetime(date),
        "Message-ID": message_id,
    }
    if unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if list_id:
        headers["List-Id"] = list_id
    for name, value in (headers | (extra_headers or {})).items():
        _set_header(message, name, value)
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    data = message.as_bytes(policy=SMTP)
    return dkim.sign(data) if dkim else data
