"""The leases one worker holds during a pass, kept alive by the real clock.

A claim makes rows ours until ``lease_until``; another worker may take a row over once that
instant has passed by its clock. So before each message goes to the transport, the sender asks
:meth:`Leases.still_ours`: if less than half a lease is left on the earliest row in hand, every
lease this worker holds is renewed in one UPDATE, which also says which rows are still ours. A
message is only handed over with at least half a lease to spare, so one send (bounded by the SMTP
timeout) always finishes before anyone else may claim it. Between renewals the check is a
comparison in memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

log = logging.getLogger(__name__)

Renew = Callable[[datetime], set[int]]  # extend all of this worker's leases to the given instant


class Leases:
    def __init__(self, length: timedelta, clock: Callable[[], datetime], renew: Renew) -> None:
        self.length = length
        self._clock = clock
        self._renew = renew
        self._lock = threading.Lock()
        self._in_hand: set[int] = set()
        self._handed: set[int] = set()  # in hand and given to the transport: never released
        self._until: datetime | None = None  # the earliest lease among the rows in hand

    def now(self) -> datetime:
        return self._clock()

    def claimed(self, ids: Iterable[int], until: datetime) -> None:
        with self._lock:
            self._in_hand.update(ids)
            self._until = until if self._until is None else min(self._until, until)

    def done(self, ids: Iterable[int]) -> None:
        """These rows are no longer leased by us (outcome written, suppressed or released)."""
        with self._lock:
            ids = set(ids)
            self._in_hand -= ids
            self._handed -= ids
            if not self._in_hand:
                self._until = None

    def still_ours(self, row_id: int) -> bool:
        """May this row be handed to the transport now? Renews the leases when half is used.
        A yes counts the row as handed over: from then on it is never released."""
        with self._lock:
            if self._may_send(row_id):
                self._handed.add(row_id)
                return True
            return False

    def _may_send(self, row_id: int) -> bool:
        if row_id not in self._in_hand:  # done, released, or lost to another worker
            return False
        now = self._clock()
        if self._until is not None and self._until - now > self.length / 2:
            return True
        self._renew_all(now)
        return row_id in self._in_hand

    def _renew_all(self, now: datetime) -> None:
        until = now + self.length
        held = self._renew(until)
        lost = self._in_hand - held
        if lost:
            log.warning("%d claimed messages were taken over by another worker after their lease "
                        "ran out; they are not sent here", len(lost))
            self._in_hand -= lost
            self._handed -= lost
        self._until = until

    def keep(self) -> None:
        """Renew the leases if half is used: called while the sender waits (for the shared rate
        limit), so the rows handed over and not yet recorded stay ours however long it waits."""
        with self._lock:
            if self._in_hand and (self._until is None or self._until - self._clock() <= self.length / 2):
                self._renew_all(self._clock())

    def not_handed(self, row_id: int) -> None:
        """The transport refused this row before any of it went out (server unreachable)."""
        with self._lock:
            self._handed.discard(row_id)

    def unhanded(self) -> set[int]:
        """Rows still ours that never reached the transport: safe to give back."""
        with self._lock:
            return self._in_hand - self._handed
