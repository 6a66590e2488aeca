"""Signed webhooks, both ways: the one HMAC-SHA256 scheme for what nurture sends and receives.

A request carries ``Nurture-Signature: t=<unix seconds>,v1=<hex>``, where the hex is
HMAC-SHA256(secret, ``"<t>." + raw body``), as Stripe's and GitHub's webhooks do. The timestamp
is inside the signed text, so a captured request can be replayed only within the receiver's
window (five minutes by default, either way); what a replay within it does is the receiver's
business (the booking hook records nothing twice: its event id is unique). Several ``v1=``
entries may appear (a sender between two secrets); one match is enough. Comparisons are
constant-time.

Outgoing deliveries (:mod:`nurture.people.webhook_delivery`) sign with :func:`sign`; the inbound
booking webhook (:mod:`nurture.web.routes_hooks`) checks with :func:`check`. Time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

SIGNATURE_HEADER = "Nurture-Signature"
TIMESTAMP_HEADER = "Nurture-Timestamp"
EVENT_ID_HEADER = "Nurture-Event-Id"
DEFAULT_WINDOW = timedelta(minutes=5)
_SCHEME = "v1"
_MAX_HEADER = 1024


class BadSignature(Exception):
    """The request is not signed with our secret, or not now: the message says which, in words
    safe to send back (never the expected value)."""


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, now: datetime) -> str:
    """The ``Nurture-Signature`` header value for ``body`` sent at ``now``."""
    timestamp = int(now.timestamp())
    return f"t={timestamp},{_SCHEME}={signature(secret, body, timestamp)}"


def check(secret: str, body: bytes, header: str | None, now: datetime, window: timedelta = DEFAULT_WINDOW) -> int:
    """The timestamp of ``header`` when it proves that ``body`` was signed with ``secret`` within
    ``window`` of ``now``; else BadSignature saying why (missing or malformed header, a time too
    far from now either way, or no ``v1`` that is the MAC of this body at that time)."""
    if not header:
        raise BadSignature(f"the request is not signed (no {SIGNATURE_HEADER} header)")
    if len(header) > _MAX_HEADER:
        raise BadSignature(f"the {SIGNATURE_HEADER} header is too long")
    timestamp, candidates = _parse(header)
    skew = abs(now.timestamp() - timestamp)
    if skew > window.total_seconds():
        raise BadSignature(f"the signature's timestamp is {int(skew)} s away from now "
                           f"(at most {int(window.total_seconds())} s are accepted)")
    expected = signature(secret, body, timestamp).encode("ascii")
    # Every candidate is compared, so the time taken says nothing about which one was close.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise BadSignature("the signature does not match the body")
    return timestamp


def why_invalid(secret: str, body: bytes, header: str | None, now: datetime,
                window: timedelta = DEFAULT_WINDOW) -> str | None:
    """Why ``header`` does not prove ``body`` (one short reason), or None when it does."""
    try:
        check(secret, body, header, now, window)
    except BadSignature as exc:
        return str(exc)
    return None


def verify(secret: str, body: bytes, header: str | None, now: datetime, window: timedelta = DEFAULT_WINDOW) -> bool:
    """Whether ``header`` is a valid, fresh signature of ``body`` under ``secret``."""
    return why_invalid(secret, body, header, now, window) is None


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise BadSignature(f"the {SIGNATURE_HEADER} header's t= is not a unix time")
            timestamp = int(value)
        elif name == _SCHEME:
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise BadSignature(f"the {SIGNATURE_HEADER} header must look like t=<unix time>,v1=<hex>")
    return timestamp, candidates
