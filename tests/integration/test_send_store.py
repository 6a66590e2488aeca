"""The in-memory store keeps the outbox's rules: the same operations against MemoryStore and against
SqlSendStore (on SQLite and on PostgreSQL) give the same answers and leave the same rows, people and
events behind, so the sender's unit tests (tests/unit/test_sender.py) test what the database does."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from nurture.db import make_engine, session_factory, transaction
from nurture.models import Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.people.subscribers import mark_status
from nurture.sending import outbox
from nurture.sending.memory_store import MemoryStore
from nurture.sending.outbox import Claim, Outcome
from nurture.sending.send_store import SqlSendStore

from factories import subscriber

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
REAL = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)  # the real clock: leases run by it
LEASE = timedelta(minutes=5)


@dataclass
class MemoryWorld:
    store: MemoryStore = field(default_factory=MemoryStore)

    def person(self, email: str, *, status: Status = Status.confirmed, series: bool = True) -> int:
        return self.store.add_person(email, first_name="Ann", timezone="Europe/Paris", status=status,
                                     wants_series=series)

    def queue(self, sid: int, key: str, due: datetime) -> None:
        self.store.enqueue(sid, key, due, template="t.html.j2")

    def event(self, kind: str, at: datetime, sid: int) -> None:
        self.store.record_event(kind, at, sid)

    def unsubscribe(self, sid: int) -> None:
        self.store.people[sid].status = Status.unsubscribed

    def snapshot(self):
        email = {p.id: p.email for p in self.store.people.values()}
        rows = sorted((email[r.subscriber_id], r.key, r.state, r.attempts, r.unknowns, r.worker, r.due_at, r.last_error)
                      for r in self.store.rows.values())
        people = {p.email: (p.status, p.replanned) for p in self.store.people.values()}
        events = sorted((e.kind, email.get(e.subscriber_id)) for e in self.store.events)
        return rows, people, events


class SqlWorld:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = session_factory(self.engine)
        self.store = SqlSendStore(self.sessions, lambda s, sid, now: mark_status(s, sid, Status.bounced, now))

    def person(self, email: str, *, status: Status = Status.confirmed, series: bool = True) -> int:
        return subscriber(self.sessions, email, REAL, status=status, series=series)

    def queue(self, sid: int, key: str, due: datetime) -> None:
        with transaction(self.sessions) as session:
            outbox.enqueue(session, subscriber_id=sid, key=key, template="t.html.j2", due_at=due, now=T0)

    def event(self, kind: str, at: datetime, sid: int) -> None:
        with transaction(self.sessions) as session:
            outbox.record_event(session, kind, at, subscriber_id=sid)

    def unsubscribe(self, sid: int) -> None:
        with transaction(self.sessions) as session:
            session.execute(update(Subscriber).where(Subscriber.id == sid).values(status=Status.unsubscribed))

    def snapshot(self):
        with self.sessions() as session:
            rows = sorted(tuple(r) for r in session.execute(
                select(Subscriber.email, OutboxMessage.key, OutboxMessage.state, OutboxMessage.attempts,
                       OutboxMessage.unknowns, OutboxMessage.worker, OutboxMessage.due_at, OutboxMessage.last_error)
                .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)))
            people = {email: (status, due < REAL) for email, status, due in session.execute(
                select(Subscriber.email, Subscriber.status, Subscriber.next_due_at))}
            events = sorted(tuple(e) for e in session.execute(
                select(Event.kind, Subscriber.email).outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)))
        return rows, people, events

    def close(self) -> None:
        self.engine.dispose()


def scenario(world) -> list:
    """Every SendStore operation, in the order a pass meets them, with its answer in plain terms."""
    store, said = world.store, []
    ann, bob, cat = world.person("ann@example.com"), world.person("bob@example.com", series=False), \
        world.person("cat@example.com", status=Status.pending)
    dan, eve = world.person("dan@example.com"), world.person("eve@example.com")
    for sid, key, minutes in [(ann, "seq:nurture:welcome", -3), (bob, "seq:nurture:welcome", -2),
                              (cat, "sys:confirm:1", -1), (dan, "bcast:1", 0), (eve, "bcast:1", -4),
                              (ann, "bcast:1", 60)]:
        world.queue(sid, key, T0 + timedelta(minutes=minutes))
    names = {}

    def claim(worker: str, **kw) -> list[Claim]:
        kw = {"now": T0, "real_now": REAL, "limit": 10, "lease": LEASE, "resend_unknown": True,
              "key_prefix": None, **kw}
        claims, suppressed = store.claim(worker=worker, **kw)
        names.update({c.id: f"{c.email} {c.key}" for c in claims})
        said.append(("claim", worker, [(c.email, c.key, c.attempts, c.unknowns) for c in claims], suppressed))
        return claims

    said.append(("due", store.count_due(T0, at_most=10), store.count_due(T0, at_most=2)))
    said.append(("plan", store.plan_page(T0)))
    first = claim("w1", limit=2)
    second = claim("w2")
    said.append(("renew", sorted(names[i] for i in store.renew(worker="w1", until=REAL + 2 * LEASE))))
    world.unsubscribe(dan)
    said.append(("wanted", sorted(names[i] for i in store.keep_wanted(second))))
    eve_c, ann_c = first
    written = store.record([Outcome(eve_c, OutboxState.sent, "250 OK"),
                            Outcome(ann_c, OutboxState.failed, "550 5.1.1 no such user", bounced=True),
                            Outcome(second[0], OutboxState.sent, "250 OK")], now=T0, worker="w1")
    said.append(("record", [names[o.claim.id] for o in written]))
    written = store.record([Outcome(second[0], OutboxState.retry, "451 later", T0 + timedelta(minutes=15))],
                           now=T0, worker="w2")
    said.append(("record", [names[o.claim.id] for o in written]))
    later = T0 + timedelta(minutes=20)
    [retried] = claim("w3", now=later)
    store.release(worker="w3", ids={retried.id})
    store.release(worker="w1", ids={retried.id})  # not w1's: nothing happens
    claim("w4", now=later)
    [taken] = claim("w5", now=later, real_now=REAL + LEASE + timedelta(seconds=1))  # w4's lease ran out
    said.append(("renew", sorted(names[i] for i in store.renew(worker="w4", until=REAL + 3 * LEASE))))
    # No reply, twice: resent once (unless told not to), then left alone.
    store.record([Outcome(taken, OutboxState.unknown, "no reply", T0 + timedelta(minutes=30))], now=later, worker="w5")
    claim("w6", now=T0 + timedelta(minutes=31), resend_unknown=False)
    [taken] = claim("w6", now=T0 + timedelta(minutes=31))
    store.record([Outcome(taken, OutboxState.unknown, "no reply", T0 + timedelta(minutes=40))], now=later, worker="w6")
    claim("w7", now=T0 + timedelta(minutes=41))
    for kind, sid, days in [("complained", bob, 1), ("complained", bob, 2), ("complained", dan, 9),
                            ("unverified", eve, 1)]:
        world.event(kind, T0 - timedelta(days=days), sid)
    since = T0 - timedelta(days=7)
    said.append(("rates", store.recent_complainers(since=since), store.recent_sent(since=since, at_most=10)))
    return said


def test_the_memory_store_answers_as_the_database_does(database_url):
    memory, sql = MemoryWorld(), SqlWorld(database_url)
    try:
        said = scenario(memory)
        assert scenario(sql) == said
        assert sql.snapshot() == memory.snapshot()
    finally:
        sql.close()
    # And what both said is what the outbox's rules say.
    assert said[:4] == [
        ("due", 5, 2),
        ("plan", (0, False)),
        ("claim", "w1", [("eve@example.com", "bcast:1", 1, 0), ("ann@example.com", "seq:nurture:welcome", 1, 0)], 0),
        ("claim", "w2", [("cat@example.com", "sys:confirm:1", 1, 0), ("dan@example.com", "bcast:1", 1, 0)], 1),
    ]
    assert said[4:8] == [
        ("renew", ["ann@example.com seq:nurture:welcome", "eve@example.com bcast:1"]),
        ("wanted", ["cat@example.com sys:confirm:1"]),
        ("record", ["eve@example.com bcast:1", "ann@example.com seq:nurture:welcome"]),  # not w2's row
        ("record", ["cat@example.com sys:confirm:1"]),
    ]
    assert said[8:] == [
        ("claim", "w3", [("cat@example.com", "sys:confirm:1", 2, 0)], 0),
        ("claim", "w4", [("cat@example.com", "sys:confirm:1", 2, 0)], 0),  # the release uncounted w3's try
        ("claim", "w5", [("cat@example.com", "sys:confirm:1", 3, 0)], 0),
        ("renew", []),  # w5 has it now
        ("claim", "w6", [], 0),
        ("claim", "w6", [("cat@example.com", "sys:confirm:1", 4, 1)], 0),
        ("claim", "w7", [], 0),
        ("rates", 1, 1),
    ]
    rows, people, _events = memory.snapshot()
    assert people["ann@example.com"] == (Status.bounced, True)
    assert ("ann@example.com", "bcast:1", OutboxState.suppressed) in [r[:3] for r in rows]
