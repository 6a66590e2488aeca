"""Hits counted per client address, shared by every web process on the database: the signup
limit and the /admin lockout hold however many web workers answer.

One row per (scope, key): the window opened by the key's first hit and the hits counted in it.
A hit is one statement (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, atomic on SQLite and
PostgreSQL alike) that either opens a new window, when the old one has passed, or counts one
more; so the hit after ``limit`` within ``period`` of the first is refused, until that window
ends, whichever process it reaches. Rows whose window has passed are swept now and then. Time
is the real clock in seconds since the epoch (comparable across processes).

If the database cannot be reached the limit lets the request through (and says so in the log):
whatever the request does next needs the database anyway, and answers for itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import case, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nurture.db import insert_or_not, transaction
from nurture.models import RateWindow

log = logging.getLogger(__name__)

KEY_LENGTH = 64  # an IPv6 address with its zone fits


class RateWindows:
    """At most ``limit`` hits per key within ``period`` seconds of its first, for all processes."""

    def __init__(self, sessions: sessionmaker[Session], scope: str, limit: int, period: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.sessions, self.scope, self.limit, self.period = sessions, scope, limit, period
        self._clock = clock
        self._next_sweep = clock() + period

    def hit(self, key: str) -> float:
        """Count a hit: 0 if allowed, else the seconds until the key's window ends."""
        now = self._clock()
        try:
            start, count = self._count(key, now)
        except SQLAlchemyError as exc:
            log.warning("the %s limit is not checked: database error (%s)", self.scope, _first_line(exc))
            return 0.0
        return 0.0 if count <= self.limit else max(start + self.period - now, 0.001)

    def add(self, key: str) -> None:
        """Count a hit whose answer is given elsewhere (a wrong password)."""
        self.hit(key)

    def wait(self, key: str) -> float:
        """Seconds this key must wait before it may try again (0: it may now), counting nothing."""
        now = self._clock()
        try:
            with self.sessions() as session:
                row = session.execute(select(RateWindow.window_start, RateWindow.count).where(
                    RateWindow.scope == self.scope, RateWindow.key == key[:KEY_LENGTH])).first()
        except SQLAlchemyError as exc:
            log.warning("the %s limit is not checked: database error (%s)", self.scope, _first_line(exc))
            return 0.0
        if row is None or row.count < self.limit or now - row.window_start >= self.period:
            return 0.0
        return row.window_start + self.period - now

    def _count(self, key: str, now: float) -> tuple[float, int]:
        """One more hit for ``key`` in one statement: (its window's start, the hits in it)."""
        passed = RateWindow.window_start <= now - self.period
        with transaction(self.sessions) as session:
            upsert = insert_or_not(session, RateWindow).values(
                scope=self.scope, key=key[:KEY_LENGTH], window_start=now, count=1)
            upsert = upsert.on_conflict_do_update(index_elements=["scope", "key"], set_={
                "window_start": case((passed, now), else_=RateWindow.window_start),
                "count": case((passed, 1), else_=RateWindow.count + 1),
            }).returning(RateWindow.window_start, RateWindow.count)
            start, count = session.execute(upsert).one()
            if now >= self._next_sweep:
                self._next_sweep = now + self.period
                session.execute(delete(RateWindow).where(RateWindow.scope == self.scope,
                                                         RateWindow.window_start <= now - self.period))
        return start, count


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
