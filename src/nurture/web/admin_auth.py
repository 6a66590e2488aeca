"""The dashboard's door: HTTP basic auth credentials, and the throttle on wrong passwords."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from nurture.web.rate_windows import RateWindows


class Failures:
    """Wrong passwords per client address, counted for every web process on the database: after
    ``limit`` within ``period`` seconds of the first, that client waits, whatever it sends (a right
    password included), until that window ends."""

    def __init__(self, sessions: sessionmaker[Session], limit: int, period: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._windows = RateWindows(sessions, "admin-login", limit, period, clock)

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before its credentials are even looked at (0: none)."""
        return self._windows.wait(client)

    def add(self, client: str) -> None:
        """One more wrong password from ``client``."""
        self._windows.add(client)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None if absent or garbled."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None
