"""An in-memory :class:`~nurture.send_store.SendStore`, for fast tests of the sending pass.

It keeps the same rules as the outbox over the database (which rows a claim takes and in what
order, who still wants a message, what an outcome writes, what a release gives back), reusing
the outbox's pure rule (:func:`nurture.outbox.wanted`) where there is one; a conformance test
runs the same operations against both so the two cannot drift apart. It plans no sequence steps:
tests queue the messages they need with :meth:`MemoryStore.enqueue`.

A test can make the next calls of an operation fail as a dropped database connection does
(:meth:`MemoryStore.fail`), and take a row over as another worker would (:meth:`take_over`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError

from nurture.message_key import BROADCAST_PREFIX, SYSTEM_PREFIX
from nurture.models import OutboxState, Status
from nurture.sending.outbox import Claim, Outcome, wanted
from nurture.sending.sent_versions import TemplateVersion

_OPEN = (OutboxState.queued, OutboxState.retry, OutboxState.unknown)


@dataclass
class Person:
    id: int
    email: str | None
    first_name: str | None = None
    timezone: str = "UTC"
    status: Status = Status.confirmed
    wants_series: bool = True
    wants_newsletter: bool = True
    replanned: bool = False  # the database's next_due_at = UNPLANNED: look at them at the next pass


@dataclass
class Row:
    id: int
    subscriber_id: int
    key: str
    template: str
    due_at: datetime
    track_opens: bool = False
    state: OutboxState = OutboxState.queued
    attempts: int = 0
    unknowns: int = 0
    worker: str | None = None
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = None
    template_version: str | None = None


@dataclass(frozen=True)
class Event:
    kind: str
    at: datetime
    subscriber_id: int | None
    outbox_id: int | None = None
    detail: str | None = None


@dataclass
class MemoryStore:
    """People, outbox rows and events in dictionaries, behind one lock (a pass may use threads)."""

    people: dict[int, Person] = field(default_factory=dict)
    rows: dict[int, Row] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # every operation called, in order
    versions: dict[tuple[str, str], TemplateVersion] = field(default_factory=dict)  # kept, by (template, digest)
    _faults: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1), init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    # What tests set up.

    def add_person(self, email: str | None, **values) -> int:
        person = Person(next(self._ids), email, **values)
        self.people[person.id] = person
        return person.id

    def enqueue(self, subscriber_id: int, key: str, due_at: datetime, *, template: str = "welcome",
                track_opens: bool = False) -> int:
        """Queue a message unless this person has one with this key; its row id either way."""
        with self._lock:
            for row in self.rows.values():
                if row.subscriber_id == subscriber_id and row.key == key:
                    return row.id
            row = Row(next(self._ids), subscriber_id, key, template, due_at, track_opens)
            self.rows[row.id] = row
            return row.id

    def record_event(self, kind: str, at: datetime, subscriber_id: int | None, outbox_id: int | None = None) -> None:
        with self._lock:
            self.events.append(Event(kind, at, subscriber_id, outbox_id))

    def fail(self, operation: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` (a method name) fail before doing anything,
        with the error a dropped database connection raises: a caller may try them again."""
        self._faults[operation] = self._faults.get(operation, 0) + times

    def take_over(self, row_id: int, worker: str, until: datetime) -> None:
        """Another worker claims this row, as after its lease ran out."""
        with self._lock:
            row = self.rows[row_id]
            row.worker, row.lease_until, row.state = worker, until, OutboxState.sending

    def states(self) -> dict[int, OutboxState]:
        return {row.id: row.state for row in self.rows.values()}

    # The SendStore operations.

    def plan_page(self, now: datetime) -> tuple[int, bool]:
        self._call("plan_page")
        return 0, False

    def count_due(self, now: datetime, *, at_most: int, people: bool = False) -> int:
        self._call("count_due")
        with self._lock:
            due = [r for r in self.rows.values()
                   if r.state in (OutboxState.queued, OutboxState.retry) and r.due_at <= now]
            return min(len(due), at_most)

    def claim(self, *, worker: str, now: datetime, real_now: datetime, limit: int, lease: timedelta,
              resend_unknown: bool, key_prefix: str | None) -> tuple[list[Claim], int]:
        self._call("claim")
        with self._lock:
            # The outbox's order: expired leases, retries, unknowns (resent at most twice), queued.
            kinds = [lambda r: r.state is OutboxState.sending and r.lease_until < real_now,
                     lambda r: r.state is OutboxState.retry and r.due_at <= now]
            if resend_unknown:
                kinds.append(lambda r: r.state is OutboxState.unknown and r.unknowns < 2 and r.due_at <= now)
            kinds.append(lambda r: r.state is OutboxState.queued and r.due_at <= now)
            taken: list[Row] = []
            for kind in kinds:
                found = sorted((r for r in self.rows.values()
                                if kind(r) and (not key_prefix or r.key.startswith(key_prefix))),
                               key=lambda r: r.due_at)
                taken.extend(found[:limit - len(taken)])
            claims, unwanted = [], []
            for row in taken:
                person = self.people[row.subscriber_id]
                if not self._wants(person, row.key):
                    unwanted.append(row.id)
                    continue
                row.state, row.worker, row.lease_until = OutboxState.sending, worker, real_now + lease
                row.attempts += 1
                claims.append(Claim(row.id, row.key, row.template, row.attempts, row.unknowns, row.track_opens,
                                    person.id, person.email, person.first_name, person.timezone))
            self._suppress(unwanted)
            return claims, len(unwanted)

    def renew(self, *, worker: str, until: datetime) -> set[int]:
        self._call("renew")
        with self._lock:
            held = {r.id for r in self.rows.values() if r.worker == worker and r.state is OutboxState.sending}
            for row_id in held:
                self.rows[row_id].lease_until = until
            return held

    def keep_wanted(self, claims: Sequence[Claim]) -> set[int]:
        self._call("keep_wanted")
        with self._lock:
            wanted_ids = {c.id for c in claims
                          if c.subscriber_id in self.people and self._wants(self.people[c.subscriber_id], c.key)}
            self._suppress([c.id for c in claims if c.id not in wanted_ids])
            return wanted_ids

    def record(self, outcomes: Sequence[Outcome], *, now: datetime, worker: str) -> list[Outcome]:
        self._call("record")
        with self._lock:
            written = [o for o in outcomes if self._holds(worker, o.claim.id)]
            for outcome in written:
                self._write(outcome, now)
            return written

    def release(self, *, worker: str, ids: set[int]) -> None:
        self._call("release")
        with self._lock:
            for row_id in ids:
                if self._holds(worker, row_id):
                    row = self.rows[row_id]
                    row.state, row.worker, row.lease_until = OutboxState.queued, None, None
                    row.attempts -= 1

    def recent_complainers(self, *, since: datetime) -> int:
        self._call("recent_complainers")
        with self._lock:
            return len({e.subscriber_id for e in self.events if e.kind == "complained" and e.at >= since})

    def recent_sent(self, *, since: datetime, at_most: int) -> int:
        self._call("recent_sent")
        with self._lock:
            return min(at_most, sum(1 for e in self.events if e.kind == "sent" and e.at >= since))

    # The rules, as the outbox applies them.

    def _call(self, operation: str) -> None:
        with self._lock:
            self.calls.append(operation)
            if self._faults.get(operation):
                self._faults[operation] -= 1
                raise OperationalError(operation, {}, ConnectionError("server closed the connection"))

    @staticmethod
    def _wants(person: Person, key: str) -> bool:
        return person.email is not None and wanted(key, person.status, person.wants_series, person.wants_newsletter)

    def _holds(self, worker: str, row_id: int) -> bool:
        row = self.rows.get(row_id)
        return row is not None and row.worker == worker and row.state is OutboxState.sending

    def _suppress(self, ids: list[int]) -> None:
        for row_id in ids:
            row = self.rows[row_id]
            row.state, row.worker, row.lease_until = OutboxState.suppressed, None, None
            if row.key.startswith(BROADCAST_PREFIX):
                self.people[row.subscriber_id].replanned = True

    def _write(self, outcome: Outcome, now: datetime) -> None:
        claim, row = outcome.claim, self.rows[outcome.claim.id]
        row.state, row.worker, row.lease_until = outcome.state, None, None
        row.sent_at = now if outcome.state is OutboxState.sent else None
        row.last_error = None if outcome.state is OutboxState.sent else outcome.reply
        row.unknowns = claim.unknowns + (outcome.state is OutboxState.unknown)
        row.attempts = claim.attempts - outcome.content_error
        row.due_at = outcome.next_attempt_at or now
        row.template_version = None if outcome.version is None else outcome.version.digest
        if outcome.version is not None:
            self.versions.setdefault((outcome.version.template, outcome.version.digest), outcome.version)
        if outcome.state in (OutboxState.sent, OutboxState.failed):
            self.events.append(Event(outcome.state.value, now, claim.subscriber_id, claim.id, outcome.reply))
        if outcome.state is OutboxState.failed and not claim.key.startswith(SYSTEM_PREFIX):
            self.people[claim.subscriber_id].replanned = True
        if outcome.bounced:
            self._bounce(claim, now, outcome.reply)

    def _bounce(self, claim: Claim, now: datetime, reply: str | None) -> None:
        """As ``subscribers.mark_status(..., Status.bounced)``: the status, and nothing more queued."""
        person = self.people[claim.subscriber_id]
        person.status = Status.bounced
        for row in self.rows.values():
            if row.subscriber_id == person.id and row.state in _OPEN:
                row.state = OutboxState.suppressed
        person.replanned = True
        self.events.append(Event("bounced", now, person.id, claim.id, reply))
