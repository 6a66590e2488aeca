"""Small rate limiters: per-key sliding windows, a pacer for one process's senders, and a pacer
that draws from the budget shared by every sender on the database (:mod:`.send_budget`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from nurture.db import DatabaseUnavailable, retrying
from nurture.sending.pass_summary import DatabaseDown
from nurture.sending.send_budget import SendBudget, buckets_for, grant_size, sustained_rate

log = logging.getLogger(__name__)

KEEP_ALIVE_EVERY = 0.25  # seconds: how often a sender waiting for the budget looks at its leases


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

    def wait(self, keep_alive: Callable[[], None] = lambda: None) -> None:
        """Block until one more message may go. (This process's waits are short; ``keep_alive``
        is for :class:`SharedPacer`'s, which depend on other processes.)"""
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

    def release(self) -> None:
        """End of a pass: nothing is held in this process's own pacer."""


class SharedPacer(Pacer):
    """A :class:`Pacer` whose limits hold for every sender on the database together.

    Sends are spaced locally at ``local_per_second`` (a spread pass's child paces at its share),
    and each one comes out of a grant from the shared ``budget``: a grant of a quarter second's
    sends is taken in one transaction, used within ``grant_ttl`` seconds or given back, and what
    is left at the end of a pass is given back. Time is the real clock (epoch seconds)."""

    def __init__(self, budget: SendBudget, per_second: float, per_hour: int, *, local_per_second: float | None = None,
                 patience: float = 60.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, local_clock: Callable[[], float] = time.monotonic,
                 grant_ttl: float = 1.0):
        # Local spacing by the monotonic clock (the wall clock may be stepped); grants by the wall clock.
        super().__init__(per_second if local_per_second is None else local_per_second, 0, local_clock, sleep)
        self.budget = budget
        self.buckets = buckets_for(per_second, per_hour)
        self.grant = grant_size(per_second, per_hour)
        # Long enough that a grant of one send at a slow hourly rate is not given back at once.
        self.grant_ttl = max(grant_ttl, 2 * self.grant / sustained_rate(per_second, per_hour))
        self._rate = sustained_rate(per_second, per_hour)
        self._patience = patience
        self._wall = clock
        self._left = 0
        self._expires = 0.0
        self._grant_lock = threading.Lock()

    @property
    def per_second(self) -> float:
        """The sustained rate all senders together are allowed."""
        return self._rate

    def wait(self, keep_alive: Callable[[], None] = lambda: None) -> None:
        """Block until one more message may go, here and across every sender on the database;
        ``keep_alive`` (renewing the caller's leases when due) is called while it waits."""
        super().wait()
        # The process's other sending threads wait for the same grant, and keep their leases
        # alive meanwhile: other processes may hold the budget for longer than half a lease.
        while not self._grant_lock.acquire(timeout=KEEP_ALIVE_EVERY):
            keep_alive()
        try:
            while True:
                now = self._wall()
                if self._left and now < self._expires:
                    self._left -= 1
                    return
                self._give_back(now)
                granted, retry = self._db("taking a share of the sending budget",
                                          lambda: self.budget.take(self.buckets, self.grant, now))
                if granted:
                    self._left, self._expires = granted - 1, now + self.grant_ttl
                    return
                keep_alive()
                self._sleep(min(retry, KEEP_ALIVE_EVERY))
        finally:
            self._grant_lock.release()

    def release(self) -> None:
        """Give back the rest of the grant, so other senders need not wait for it."""
        with self._grant_lock:
            try:
                self._give_back(self._wall())
            except DatabaseDown as exc:  # the grant is spent instead: the budget refills anyway
                log.warning("an unused grant of the sending budget is not given back (%s)", exc)

    def _give_back(self, now: float) -> None:
        if self._left:
            left, self._left = self._left, 0
            self._db("giving back an unused grant", lambda: self.budget.give_back(self.buckets, left, now))

    def _db(self, what: str, work):
        try:
            return retrying(work, what=what, patience=self._patience)
        except DatabaseUnavailable as exc:
            raise DatabaseDown(f"database unreachable while {exc}") from None
