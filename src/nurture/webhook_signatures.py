"""Signed webhooks, Stripe's and GitHub's way: HMAC-SHA256 over a timestamp and the raw body.

The header is ``Nurture-Signature: t=<unix seconds>,v1=<hex>``, where the MAC covers the bytes
``"<t>.<raw body>"`` under a shared secret. The timestamp is inside the MAC, so a captured
request can be replayed only within the tolerance (five minutes); what a replay within it does is
the receiver's business (the booking hook records nothing twice: its event id is unique).

Several ``v1=`` values may be given (a sender rotating its secret signs with both); one match is
enough. Comparisons are constant-time. Pure functions: time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

HEADER = "Nurture-Signature"
TOLERANCE = timedelta(minutes=5)
_MAX_HEADER = 1024

__all__ = ["HEADER", "TOLERANCE", "BadSignature", "sign", "signature_header", "verify"]


class BadSignature(Exception):
    """The request is not signed with our secret, or not now: the message says which, in words
    safe to send back (never the expected value)."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex MAC of ``body`` sent at ``timestamp`` (unix seconds)."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The header value a sender sets: ``t=<timestamp>,v1=<hex>``."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(header: str | None, body: bytes, *, secret: str, now: datetime,
           tolerance: timedelta = TOLERANCE) -> int:
    """Check a ``Nurture-Signature`` header against the raw ``body``; return its timestamp.

    Raises BadSignature when the header is missing or malformed, its time is further than
    ``tolerance`` from ``now`` either way (stale, or from a clock too far ahead), or no ``v1``
    value is the MAC of this body at that time."""
    if not header:
        raise BadSignature(f"the request is not signed (no {HEADER} header)")
    if len(header) > _MAX_HEADER:
        raise BadSignature(f"the {HEADER} header is too long")
    timestamp, signatures = _parse(header)
    skew = abs(now.timestamp() - timestamp)
    if skew > tolerance.total_seconds():
        raise BadSignature(f"the signature's timestamp is {int(skew)} s away from now "
                           f"(at most {int(tolerance.total_seconds())} s are accepted)")
    expected = sign(secret, timestamp, body).encode("ascii")
    # Every candidate is compared, so the time taken says nothing about which one was close.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise BadSignature("the signature does not match the body")
    return timestamp


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise BadSignature(f"the {HEADER} header's t= is not a unix time")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadSignature(f"the {HEADER} header must look like t=<unix time>,v1=<hex>")
    return timestamp, signatures
