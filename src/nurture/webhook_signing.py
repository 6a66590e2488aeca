"""Signed webhooks, both ways: the one HMAC-SHA256 scheme for what nurture sends and receives.

A request carries ``Nurture-Signature: t=<unix seconds>,v1=<hex>``, where the hex is
HMAC-SHA256(secret, ``"<t>." + raw body``), as Stripe's webhooks do. The timestamp is inside the
signed text, so a captured request cannot be replayed later with a fresh one; the receiver refuses
a timestamp outside its window (five minutes by default) and compares in constant time. Several
``v1=`` entries may appear (a sender between two secrets); one match is enough.

Outgoing deliveries (:mod:`nurture.people.webhook_delivery`) sign with :func:`sign`; the inbound
booking webhook checks with :func:`verify`. Time is passed in.
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


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, now: datetime) -> str:
    """The ``Nurture-Signature`` header value for ``body`` sent at ``now``."""
    timestamp = int(now.timestamp())
    return f"t={timestamp},{_SCHEME}={signature(secret, body, timestamp)}"


def why_invalid(secret: str, body: bytes, header: str | None, now: datetime,
                window: timedelta = DEFAULT_WINDOW) -> str | None:
    """Why ``header`` does not prove that ``body`` was signed with ``secret`` within ``window``
    of ``now`` (one short reason), or None when it does."""
    if not header:
        return "no signature"
    timestamp, candidates = _parse(header)
    if timestamp is None or not candidates:
        return "malformed signature header"
    if abs(now.timestamp() - timestamp) > window.total_seconds():
        return "timestamp outside the allowed window"
    expected = signature(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        return "signature does not match"
    return None


def verify(secret: str, body: bytes, header: str | None, now: datetime, window: timedelta = DEFAULT_WINDOW) -> bool:
    """Whether ``header`` is a valid, fresh signature of ``body`` under ``secret``."""
    return why_invalid(secret, body, header, now, window) is None


def _parse(header: str) -> tuple[int | None, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == _SCHEME and value:
            candidates.append(value.strip().lower())
    return timestamp, candidates
