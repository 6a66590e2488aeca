"""The dashboard's door: HTTP basic auth credentials, and the throttle on wrong passwords."""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections import deque
from collections.abc import Callable


class Failures:
    """Wrong passwords per client address: after ``limit`` within ``period`` seconds, that client
    waits, whatever it sends (a right password included), until the oldest failure ages out."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.period, self._clock = limit, period, clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(client)
            while seen and now - seen[0] >= self.period:
                seen.popleft()
            if not seen:
                self._seen.pop(client, None)
                return 0.0
            return self.period - (now - seen[0]) if len(seen) >= self.limit else 0.0

    def add(self, client: str) -> None:
        with self._lock:
            if len(self._seen) > 10_000:  # bounded memory under a spray of addresses
                self._seen.clear()
            self._seen.setdefault(client, deque()).append(self._clock())


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
