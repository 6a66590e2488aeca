"""The store a sending pass depends on, and its SQLAlchemy implementation over the outbox.

The sender declares what it needs from storage (:class:`SendStore`) and nothing more: plan what
is due, claim a batch with a lease, renew the leases, re-check who still wants a chunk, record
outcomes, give back what was never handed over, and the recent rates its circuit breaker
judges. :class:`SqlSendStore` adapts the database to it (the functions of :mod:`nurture.outbox`
and :mod:`nurture.journey`); :class:`nurture.memory_store.MemoryStore` is the in-memory one the
pass logic is unit-tested against.

Each operation is one short session or transaction of its own, opened when it is called, so a
caller that tries an operation again after a dropped connection (``nurture.db.retrying``, as the
sender does) gets a fresh connection. An operation either happens whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from nurture.db import transaction
from nurture.message_key import SYSTEM_PREFIX
from nurture.models import OutboxState
from nurture.sending import journey, outbox
from nurture.sending.sent_versions import store_versions
from nurture.sending.outbox import Claim, Outcome

# Marks a subscriber as bounced (status, and whatever else that means for them), in the
# transaction that records the bounce. Given by the wiring, so sending never imports the rules
# about people (``nurture.subscribers``).
MarkBounced = Callable[[Session, int, datetime], None]


class SendStore(Protocol):
    """What a sending pass needs from storage. ``now`` is the instant the pass plans for (which
    ``send-due --now`` moves); ``real_now`` and lease instants are by the real clock."""

    def plan_page(self, now: datetime) -> tuple[int, bool]:
        """Queue the sequence steps due at ``now`` for one page of people: how many, and whether
        more people may be due. (0, False) where nothing plans sequences."""

    def count_due(self, now: datetime, *, at_most: int, people: bool = False) -> int:
        """Messages due at ``now``, counted up to ``at_most``; with ``people``, also the people
        whose next sequence step has come (before planning)."""

    def claim(self, *, worker: str, now: datetime, real_now: datetime, limit: int, lease: timedelta,
              resend_unknown: bool, key_prefix: str | None) -> tuple[list[Claim], int]:
        """Claim up to ``limit`` messages due at ``now`` for ``worker``, leased until ``real_now +
        lease``, suppressing those no longer wanted: the claims, and how many were suppressed."""

    def renew(self, *, worker: str, until: datetime) -> set[int]:
        """Extend every lease ``worker`` holds to ``until``: the ids it still holds."""

    def keep_wanted(self, claims: Sequence[Claim]) -> set[int]:
        """Ids of the claims whose subscriber still wants them; the others are suppressed."""

    def record(self, outcomes: Sequence[Outcome], *, now: datetime, worker: str) -> list[Outcome]:
        """Write the outcomes of rows ``worker`` still holds (the others were taken over), with
        what follows from them (a bounced address, a failed marketing email); the ones written."""

    def release(self, *, worker: str, ids: set[int]) -> None:
        """Give back these claims of ``worker``, never handed to the transport."""

    def recent_complainers(self, *, since: datetime) -> int:
        """Distinct people with a verified complaint since ``since``."""

    def recent_sent(self, *, since: datetime, at_most: int) -> int:
        """Emails sent since ``since``, counted up to ``at_most``."""


@dataclass
class SqlSendStore:
    """:class:`SendStore` over the database: each operation its own short transaction."""

    sessions: sessionmaker[Session]
    mark_bounced: MarkBounced
    planner: journey.Planner | None = None  # None: this store queues no sequence steps
    # (template, digest) of the versions this store has written: each is written once per process.
    _kept: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)

    def plan_page(self, now: datetime) -> tuple[int, bool]:
        if self.planner is None:
            return 0, False
        with transaction(self.sessions) as session:
            return self.planner.plan_some(session, now)

    def count_due(self, now: datetime, *, at_most: int, people: bool = False) -> int:
        with self.sessions() as session:
            found = outbox.count_due(session, now=now, at_most=at_most)
            if people and self.planner is not None and found < at_most:
                found += journey.people_due(session, now, at_most=at_most - found)
            return found

    def claim(self, *, worker: str, now: datetime, real_now: datetime, limit: int, lease: timedelta,
              resend_unknown: bool, key_prefix: str | None) -> tuple[list[Claim], int]:
        with transaction(self.sessions) as session:
            return outbox.claim_batch(session, worker=worker, now=now, real_now=real_now, limit=limit,
                                      lease=lease, resend_unknown=resend_unknown, key_prefix=key_prefix)

    def renew(self, *, worker: str, until: datetime) -> set[int]:
        with transaction(self.sessions) as session:
            return outbox.renew(session, worker=worker, until=until)

    def keep_wanted(self, claims: Sequence[Claim]) -> set[int]:
        # A read first, so the check never queues for SQLite's write lock unless someone left.
        with self.sessions() as session:
            wanted = outbox.still_wanted(session, claims)
        unwanted = [c.id for c in claims if c.id not in wanted]
        if unwanted:
            with transaction(self.sessions) as session:
                outbox.suppress_unwanted(session, unwanted)
        return wanted

    def record(self, outcomes: Sequence[Outcome], *, now: datetime, worker: str) -> list[Outcome]:
        new = {(o.version.template, o.version.digest): o.version for o in outcomes
               if o.version is not None and (o.version.template, o.version.digest) not in self._kept}
        with transaction(self.sessions) as session:
            store_versions(session, new.values(), now=now)
            written = outbox.record_outcomes(session, outcomes, now=now, worker=worker)
            # A marketing email that failed holds no day: the person's next step may go sooner.
            outbox.replan(session, (o.claim.subscriber_id for o in written
                                    if o.state is OutboxState.failed and not o.claim.key.startswith(SYSTEM_PREFIX)))
            for outcome in written:
                if outcome.bounced:
                    claim = outcome.claim
                    self.mark_bounced(session, claim.subscriber_id, now)
                    outbox.record_event(session, "bounced", now, subscriber_id=claim.subscriber_id,
                                        outbox_id=claim.id, detail=outcome.reply)
        self._kept.update(new)  # only once committed: a rolled-back write is tried again
        return written

    def release(self, *, worker: str, ids: set[int]) -> None:
        with transaction(self.sessions) as session:
            outbox.release(session, worker=worker, ids=ids)

    def recent_complainers(self, *, since: datetime) -> int:
        with self.sessions() as session:
            return outbox.recent_complainers(session, since=since)

    def recent_sent(self, *, since: datetime, at_most: int) -> int:
        with self.sessions() as session:
            return outbox.recent_sent(session, since=since, at_most=at_most)
