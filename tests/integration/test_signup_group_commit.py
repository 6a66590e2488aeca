"""Signups committed together (group_commit.GroupCommit over subscribers.subscribe_many), on a real SQLite
file and on PostgreSQL: one row each, the usual rules inside a group, one failure its own, and an
answer only once the rows are committed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from nurture.db import transaction
from nurture.group_commit import GroupCommit
from nurture.models import ConsentEvent, OutboxMessage, Status, Subscriber
from nurture.people import subscribers
from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS, RequestInfo
from nurture.people.new_subscribers import SignupRequest
from nurture.people.validation import Signup
from nurture.sending import outbox

NOW = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)


def run(coroutine):
    """asyncio.run on a thread of its own: the browser tests leave an event loop running on the
    main thread of the test process."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def request(address: str, *, honeypot: bool = False, at: datetime = NOW) -> SignupRequest:
    return SignupRequest(Signup(address, "Ann", "Europe/Berlin", CONSENT_VERSION, honeypot),
                         RequestInfo("198.51.100.7", "pytest/1.0", "json-api"), at)


class Writer:
    """A GroupCommit over the real signup rules whose first group can be held open, so that
    whatever is submitted meanwhile makes up the next group, all of it."""

    def __init__(self, runtime) -> None:
        self.groups: list[int] = []
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.committed: list = []

        def work(session, items):
            self.groups.append(len(items))
            if len(self.groups) == 1:
                self.holding.set()
                assert self.hold.wait(10)
            return subscribers.subscribe_many(session, items, default_timezone="UTC", confirmations_per_day=3)

        self.commit = GroupCommit(runtime.sessions, work, after_commit=self.committed.append)

    async def one_group(self, items: list[SignupRequest]) -> list:
        """Submit ``items`` while a first signup holds the writer: they are written as one group."""
        first = asyncio.ensure_future(self.commit.submit(request("first@example.com")))
        await asyncio.to_thread(self.holding.wait, 10)
        rest = [asyncio.ensure_future(self.commit.submit(item)) for item in items]
        await asyncio.sleep(0.05)  # all queued behind the held group
        self.hold.set()
        await first
        return await asyncio.gather(*rest, return_exceptions=True)


def count(runtime, model, *where) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_group_of_signups_writes_each_one_by_the_usual_rules(runtime):
    with transaction(runtime.sessions) as session:  # an address already waiting for its confirmation
        subscribers.subscribe(session, request("known@example.com").signup, now=NOW - timedelta(minutes=1),
                              request=request("known@example.com").request, default_timezone="UTC",
                              confirmations_per_day=3)
    writer = Writer(runtime)
    items = [request(f"new{i}@example.com") for i in range(20)]
    items += [request("twice@example.com"), request("known@example.com"), request("twice@example.com"),
              request("bot@example.com", honeypot=True)]
    try:
        outcomes = run(writer.one_group(items))
    finally:
        writer.commit.stop()

    assert writer.groups == [1, len(items)]  # the held first signup, then everything else at once
    assert [o.confirmation_queued for o in outcomes] == [True] * 20 + [True, False, False, False]
    assert outcomes[-1].subscriber_id is None  # the honeypot stored nothing
    assert outcomes[20].subscriber_id == outcomes[22].subscriber_id  # the same person, once
    assert count(runtime, Subscriber) == 1 + 1 + 20 + 1  # known, first, the twenty, twice
    assert count(runtime, Subscriber, Subscriber.email == "bot@example.com") == 0
    # A ledger row per signup (the repeat and the known address too), with who and what was agreed.
    assert count(runtime, ConsentEvent) == 1 + 1 + 20 + 3
    with runtime.sessions() as session:
        for event_ in session.scalars(select(ConsentEvent)):
            assert (event_.kind, event_.ip, event_.user_agent, event_.source) == (
                "signup", "198.51.100.7", "pytest/1.0", "json-api")
            assert (event_.wording, event_.wording_version) == (CONSENT_WORDINGS[CONSENT_VERSION], CONSENT_VERSION)
        statuses = set(session.scalars(select(Subscriber.status)))
    assert statuses == {Status.pending}
    # One confirmation each: no second one for the repeat, none for the address asked a minute ago.
    assert count(runtime, OutboxMessage) == 1 + 1 + 20 + 1
    assert count(runtime, OutboxMessage, OutboxMessage.key != "sys:confirm:1") == 0
    # after_commit ran once per group, with that group's outcomes, before anyone heard back.
    assert [len(results) for results in writer.committed] == [1, len(items)]


def test_one_signup_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_written(runtime):
    def refuse(_conn, _cursor, statement, parameters, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO SUBSCRIBERS") and "refused@example.com" in str(parameters):
            raise IntegrityError(statement, parameters, Exception("raced by another process"))

    event.listen(runtime.engine, "before_cursor_execute", refuse)
    writer = Writer(runtime)
    items = [request(f"ok{i}@example.com") for i in range(5)] + [request("refused@example.com")]
    items += [request(f"also{i}@example.com") for i in range(5)]
    try:
        outcomes = run(writer.one_group(items))
    finally:
        writer.commit.stop()
        event.remove(runtime.engine, "before_cursor_execute", refuse)

    assert isinstance(outcomes[5], IntegrityError)
    assert all(o.confirmation_queued for i, o in enumerate(outcomes) if i != 5)
    assert writer.groups[:2] == [1, len(items)] and len(writer.groups) == 2 + len(items)  # then each alone
    assert count(runtime, Subscriber) == 1 + 10
    assert count(runtime, Subscriber, Subscriber.email == "refused@example.com") == 0
    assert count(runtime, ConsentEvent) == count(runtime, OutboxMessage) == 1 + 10  # nothing half-written


def test_a_transient_failure_fails_the_whole_group_at_once_and_writes_nothing(runtime):
    calls = []

    def locked(session, items):
        calls.append(len(items))
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    commit = GroupCommit(runtime.sessions, locked)

    async def main():
        return await asyncio.gather(*(commit.submit(request(f"t{i}@example.com")) for i in range(5)),
                                    return_exceptions=True)
    try:
        outcomes = run(main())
    finally:
        commit.stop()
    assert all(isinstance(o, OperationalError) for o in outcomes)
    assert sum(calls) == 5  # not tried again one by one: each would wait out the same lock
    assert count(runtime, Subscriber) == 0


def test_no_answer_before_the_commit_a_failed_commit_answers_the_error(runtime):
    committed = threading.Event()

    def fail_commit(_conn):
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    commit = GroupCommit(runtime.sessions, lambda session, items: subscribers.subscribe_many(
        session, items, default_timezone="UTC", confirmations_per_day=3), after_commit=lambda _r: committed.set())
    event.listen(runtime.engine, "commit", fail_commit)
    try:
        with pytest.raises(OperationalError):
            run(commit.submit(request("lost@example.com")))
    finally:
        event.remove(runtime.engine, "commit", fail_commit)
        commit.stop()
    assert not committed.is_set()
    assert count(runtime, Subscriber) == count(runtime, ConsentEvent) == count(runtime, OutboxMessage) == 0


def test_stop_writes_what_was_submitted_then_refuses_more(runtime):
    writer = Writer(runtime)

    async def main():
        first = asyncio.ensure_future(writer.commit.submit(request("first@example.com")))
        await asyncio.to_thread(writer.holding.wait, 10)
        rest = [asyncio.ensure_future(writer.commit.submit(request(f"s{i}@example.com"))) for i in range(3)]
        await asyncio.sleep(0.05)  # queued behind the held group
        stopping = asyncio.ensure_future(asyncio.to_thread(writer.commit.stop))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError):  # once stopping, nothing more is taken
            await writer.commit.submit(request("late@example.com"))
        writer.hold.set()
        await stopping
        return await asyncio.gather(first, *rest)

    outcomes = run(main())
    assert [o.confirmation_queued for o in outcomes] == [True] * 4
    assert count(runtime, Subscriber) == 4
    assert count(runtime, Subscriber, Subscriber.email == "late@example.com") == 0


def test_a_signups_first_confirmation_is_the_row_outbox_enqueue_writes(runtime):
    """The group path writes the confirmation row itself (one multi-row INSERT): it must stay the
    row outbox.enqueue would write."""
    commit = GroupCommit(runtime.sessions, lambda session, items: subscribers.subscribe_many(
        session, items, default_timezone="UTC", confirmations_per_day=3))
    try:
        [outcome] = run(_gather(commit, [request("grouped@example.com")]))
    finally:
        commit.stop()
    with transaction(runtime.sessions) as session:
        other = subscribers.subscribe(session, request("other@example.com").signup, now=NOW,
                                      request=request("other@example.com").request, default_timezone="UTC",
                                      confirmations_per_day=3).subscriber_id
        session.execute(OutboxMessage.__table__.delete().where(OutboxMessage.subscriber_id == other))
        outbox.enqueue(session, subscriber_id=other, key="sys:confirm:1", template=subscribers.CONFIRM_TEMPLATE,
                       due_at=NOW, now=NOW)
    columns = [c for c in OutboxMessage.__table__.columns if c.name not in ("id", "subscriber_id")]
    with runtime.sessions() as session:
        grouped, enqueued = (session.execute(select(*columns).where(OutboxMessage.subscriber_id == who)).one()
                             for who in (outcome.subscriber_id, other))
    assert grouped._asdict() == enqueued._asdict()


async def _gather(commit, items):
    return await asyncio.gather(*(commit.submit(item) for item in items))
