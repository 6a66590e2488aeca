"""The sending budget every sender on one database draws from: token buckets kept in the database.

NURTURE_RATE_PER_SECOND and NURTURE_RATE_PER_HOUR are the relay's limits, so they hold for all
sending processes together. Each limit is a bucket that fills at its rate up to a small capacity;
a sender takes a *grant* of a few sends at a time (so it does not reach the database for every
message at high rates) and paces itself within it (:class:`nurture.sending.ratelimit.SharedPacer`).
A grant taken by a sender that then dies is simply spent: the bucket fills again at its rate, so
the others wait at most one grant's worth of time. Instants are seconds since the epoch by the
real clock (never ``--now``), comparable across processes and machines.

The arithmetic is pure (:func:`take`, :func:`give_back`); :class:`SqlBudget` applies it to the
``send_budget`` rows in one short transaction (rows locked with ``FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), :class:`MemoryBudget` in memory for unit tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nurture.db import insert_or_not, transaction
from nurture.models import SendBudgetBucket

GRANT_SECONDS = 0.25  # a grant is about this much sending at the full rate
MAX_GRANT = 50


@dataclass(frozen=True)
class Bucket:
    """One limit: fills at ``rate`` tokens a second up to ``capacity``; a send costs one token."""

    name: str
    rate: float
    capacity: float

    def level(self, tokens: float, refreshed_at: float, now: float) -> float:
        """Tokens at ``now``. A clock behind the one that wrote the row adds nothing, never less."""
        return min(self.capacity, tokens + max(0.0, now - refreshed_at) * self.rate)


Level = tuple[float, float]  # (tokens, refreshed_at)


def sustained_rate(per_second: float, per_hour: int) -> float:
    """Sends a second the limits allow in the long run (0: no limit)."""
    rates = [r for r in (per_second, per_hour / 3600.0) if r]
    return min(rates) if rates else 0.0


def grant_size(per_second: float, per_hour: int) -> int:
    """How many sends one grant holds: a quarter second's worth, at least one."""
    return max(1, min(MAX_GRANT, int(sustained_rate(per_second, per_hour) * GRANT_SECONDS)))


def buckets_for(per_second: float, per_hour: int) -> tuple[Bucket, ...]:
    """The buckets of the configured limits (none: no limit, no database work).

    Per second: capacity one grant, so after an idle spell one grant may go on top of the rate.
    Per hour the quota is strict over any hour: a burst of a minute's quota, and a refill of
    ``(per_hour + 1 - burst) / 3600`` a second, so burst + an hour's refill never passes
    ``per_hour`` sends in an hour (and with a burst of 1 the refill is exactly the quota)."""
    found = []
    if per_second:
        found.append(Bucket("second", float(per_second), float(grant_size(per_second, per_hour))))
    if per_hour:
        burst = max(1, per_hour // 60)
        found.append(Bucket("hour", (per_hour + 1 - burst) / 3600.0, float(burst)))
    return tuple(found)


def take(buckets: Sequence[Bucket], levels: dict[str, Level], want: int,
         now: float) -> tuple[int, dict[str, Level], float]:
    """Take up to ``want`` sends from every bucket at once: (granted, the new levels, and when
    nothing could be granted, the seconds until ``want`` sends, or a full bucket, would be there).
    A bucket without a level yet starts full."""
    current = {b.name: b.level(*levels.get(b.name, (b.capacity, now)), now) for b in buckets}
    granted = min([want, *(math.floor(current[b.name] + 1e-9) for b in buckets)])
    if granted >= 1:
        after = {b.name: (current[b.name] - granted, _later(levels, b, now)) for b in buckets}
        return granted, after, 0.0
    retry = max((min(want, b.capacity) - current[b.name]) / b.rate for b in buckets)
    return 0, levels, max(retry, 0.001)


def give_back(buckets: Sequence[Bucket], levels: dict[str, Level], count: int, now: float) -> dict[str, Level]:
    """The levels with ``count`` unused sends of a grant returned (never above capacity)."""
    return {b.name: (min(b.capacity, b.level(*levels.get(b.name, (b.capacity, now)), now) + count),
                     _later(levels, b, now)) for b in buckets}


def _later(levels: dict[str, Level], bucket: Bucket, now: float) -> float:
    # Kept monotonic: a process whose clock is behind must not refill the bucket twice.
    return max(now, levels.get(bucket.name, (0.0, now))[1])


class SendBudget(Protocol):
    """Where the shared budget lives: take a grant of sends, give back what a grant did not use."""

    def take(self, buckets: Sequence[Bucket], want: int, now: float) -> tuple[int, float]:
        """Up to ``want`` sends from all ``buckets``: (granted, seconds to wait when 0)."""

    def give_back(self, buckets: Sequence[Bucket], count: int, now: float) -> None:
        """Return ``count`` unused sends."""


class MemoryBudget:
    """:class:`SendBudget` in memory: one process's senders (unit tests)."""

    def __init__(self) -> None:
        self.levels: dict[str, Level] = {}
        self._lock = threading.Lock()

    def take(self, buckets: Sequence[Bucket], want: int, now: float) -> tuple[int, float]:
        with self._lock:
            granted, after, retry = take(buckets, self.levels, want, now)
            self.levels.update(after)
            return granted, retry

    def give_back(self, buckets: Sequence[Bucket], count: int, now: float) -> None:
        with self._lock:
            self.levels.update(give_back(buckets, self.levels, count, now))


@dataclass
class SqlBudget:
    """:class:`SendBudget` over the ``send_budget`` rows: each call one short transaction."""

    sessions: sessionmaker[Session]

    def take(self, buckets: Sequence[Bucket], want: int, now: float) -> tuple[int, float]:
        with transaction(self.sessions) as session:
            rows = self._rows(session, buckets, now)
            granted, after, retry = take(buckets, _levels(rows), want, now)
            if granted:
                _write(rows, after)
            return granted, retry

    def give_back(self, buckets: Sequence[Bucket], count: int, now: float) -> None:
        with transaction(self.sessions) as session:
            rows = self._rows(session, buckets, now)
            _write(rows, give_back(buckets, _levels(rows), count, now))

    @staticmethod
    def _rows(session: Session, buckets: Sequence[Bucket], now: float) -> dict[str, SendBudgetBucket]:
        """The buckets' rows, locked for this transaction (in name order, so two senders never
        deadlock); a missing one is made full first."""
        names = sorted(b.name for b in buckets)
        query = select(SendBudgetBucket).where(SendBudgetBucket.name.in_(names)).order_by(SendBudgetBucket.name)
        rows = {r.name: r for r in session.scalars(query.with_for_update())}
        if len(rows) < len(names):
            session.execute(insert_or_not(session, SendBudgetBucket).values(
                [{"name": b.name, "tokens": b.capacity, "refreshed_at": now} for b in buckets if b.name not in rows]
            ).on_conflict_do_nothing(index_elements=["name"]))
            rows = {r.name: r for r in session.scalars(query.with_for_update())}
        return rows


def _levels(rows: dict[str, SendBudgetBucket]) -> dict[str, Level]:
    return {name: (row.tokens, row.refreshed_at) for name, row in rows.items()}


def _write(rows: dict[str, SendBudgetBucket], levels: dict[str, Level]) -> None:
    for name, (tokens, refreshed_at) in levels.items():
        rows[name].tokens, rows[name].refreshed_at = tokens, refreshed_at
