"""Two small rate limiters: per-key sliding windows for the web, a pacer for the sender."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class WindowLimiter:
    """At most ``limit`` hits per ``period`` seconds for each key (an IP address).

    In memory and per process: enough to stop one noisy client hammering /subscribe. Keys that
    go quiet are dropped, so memory stays bounded by the number of recently active clients.
    """

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def hit(self, key: str) -> float:
        """Record a hit; return 0 if allowed, else the seconds until the next hit is allowed."""
        now = self._clock()
        with self._lock:
            if now - self._last_sweep > self.period:
                self._sweep(now)
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= self.period:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(self.period - (now - hits[0]), 0.001)
            hits.append(now)
            return 0.0

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [k for k, hits in self._hits.items() if not hits or now - hits[-1] >= self.period]:
            del self._hits[key]


class Pacer:
    """Spaces out sends to at most ``per_second`` and ``per_hour`` (0 = no limit), across threads."""

    def __init__(self, per_second: float = 0, per_hour: int = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.hourly = WindowLimiter(per_hour, 3600.0, clock) if per_hour else None
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self._lock = threading.Lock()

    @property
    def per_second(self) -> float:
        """The sustained rate allowed (0: no limit)."""
        hourly = self.hourly.limit / 3600.0 if self.hourly else 0.0
        rates = [r for r in (1.0 / self.interval if self.interval else 0.0, hourly) if r]
        return min(rates) if rates else 0.0

    def wait(self) -> None:
        """Block until one more message may go."""
        if not self.interval and not self.hourly:
            return
        while self.hourly and (delay := self.hourly.hit("all")):
            self._sleep(delay)
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)
