"""The sending pass against the in-memory store (nurture.memory_store) and the in-memory transport:
retries and backoff, what a reply means, one message's fault kept to itself, the circuit breaker,
owned leases, outcomes kept until written, a server that goes away, --limit, and the re-check of
who still wants their mail. The real renderer and message builder run; only storage and the
wire are in memory. The same pass on real databases: tests/integration (send isolation, SMTP
delivery, concurrent senders, database faults, unsubscribe race)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from nurture.models import OutboxState, Status
from nurture.runtime import Runtime
from nurture.sending.memory_store import MemoryStore
from nurture.sending.outcomes import RENDER_RETRY, retry_delay
from nurture.sending.pass_summary import CircuitOpen, DatabaseDown, TransportDown
from nurture.sending.sender import Sender
from nurture.sending.transports import MemoryTransport, Reply, Unreachable

from conftest import make_settings

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
WELCOME = "nurture/10-welcome-history.html.j2"
SEED = 20261201


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The real renderer, links and mail settings, as the runtime builds them (no database)."""
    settings = make_settings(tmp_path_factory.mktemp("sender"), "sqlite:///never-opened.db")
    runtime = Runtime(settings)
    return runtime.renderer, runtime.links, replace(runtime.mail_settings(), threads=1)


class World:
    """A sender over a MemoryStore and a MemoryTransport, with a real clock the test moves."""

    def __init__(self, parts, **mail) -> None:
        renderer, links, settings = parts
        self.store = MemoryStore()
        self.transport = MemoryTransport()
        self.clock = T0
        self.sender = Sender(store=self.store, renderer=renderer, transport=self.transport, links=links,
                             settings=replace(settings, **mail), worker="here", clock=lambda: self.clock,
                             rng=random.Random(SEED))

    def person(self, email: str = "", *, key: str = "seq:nurture:welcome", template: str = WELCOME,
               due: datetime = T0, **values) -> int:
        """A confirmed person with one message due; returns its outbox row id."""
        sid = self.store.add_person(email or f"p{len(self.store.people)}@example.com", **values)
        return self.store.enqueue(sid, key, due, template=template)

    def row(self, row_id: int):
        return self.store.rows[row_id]

    def delivered(self) -> list[str]:
        return [recipient for _sender, recipient, _data in self.transport.sent]


def test_a_temporary_failure_is_retried_with_growing_pauses_then_failed_at_max_attempts(parts):
    world = World(parts, max_attempts=3)
    row_id = world.person()
    jitter = random.Random(SEED)  # the sender's own generator, seeded alike
    now = T0
    for attempt in (1, 2):
        world.transport.replies.append(Reply(451, "4.7.1 try again later"))
        summary = world.sender.run_pass(now)
        assert summary.retried == 1
        row = world.row(row_id)
        assert row.state is OutboxState.retry and row.attempts == attempt
        assert row.due_at == now + retry_delay(attempt, jitter)
        assert world.sender.run_pass(row.due_at - timedelta(seconds=1)).retried == 0  # not due yet
        now = row.due_at
    world.transport.replies.append(Reply(451, "4.7.1 try again later"))
    assert world.sender.run_pass(now).failed == 1
    row = world.row(row_id)
    assert row.state is OutboxState.failed and row.attempts == 3 and row.last_error == "451 4.7.1 try again later"
    assert [e.kind for e in world.store.events] == ["failed"]


def test_the_retry_jitter_comes_from_the_generator_the_sender_owns(parts):
    first, second, other = World(parts), World(parts), World(parts)
    other.sender.rng = random.Random(SEED + 1)
    for world in (first, second, other):
        world.person()
        world.transport.replies.append(Reply(421, "4.3.2 busy"))
        world.sender.run_pass(T0)
    [a], [b], [c] = first.store.rows.values(), second.store.rows.values(), other.store.rows.values()
    assert a.due_at == b.due_at != c.due_at  # the same seed, the same pause
    assert timedelta(minutes=12) <= a.due_at - T0 <= timedelta(minutes=18)  # 15 minutes +-20%


@pytest.mark.parametrize("reply, state, bounced", [
    (Reply(250, "2.0.0 OK"), OutboxState.sent, False),
    (Reply(452, "4.2.2 mailbox full"), OutboxState.retry, False),
    (Reply(550, "5.1.1 no such user"), OutboxState.failed, True),
    (Reply(550, "5.2.1 mailbox disabled"), OutboxState.failed, True),
    (Reply(554, "5.7.1 rejected as spam"), OutboxState.failed, False),
])
def test_what_a_reply_means(parts, reply, state, bounced):
    world = World(parts)
    row_id = world.person("reader@example.com")
    later = world.store.enqueue(world.row(row_id).subscriber_id, "bcast:9", T0 + timedelta(days=1),
                                template="newsletter/2026-12-winter.html.j2")
    world.transport.replies.append(reply)
    summary = world.sender.run_pass(T0)
    assert world.row(row_id).state is state
    assert summary.bounced == int(bounced)
    person = world.store.people[world.row(row_id).subscriber_id]
    assert (person.status is Status.bounced) == bounced
    # A bounced address gets nothing more: what was queued for it is suppressed.
    assert world.row(later).state is (OutboxState.suppressed if bounced else OutboxState.queued)
    assert ("bounced" in [e.kind for e in world.store.events]) == bounced


def test_a_message_that_cannot_be_built_fails_alone(parts):
    world = World(parts, max_attempts=2)
    odd = world.person("odd,one@example.com")  # as an old import may have stored it
    fine = world.person("fine@example.com")
    summary = world.sender.run_pass(T0)
    assert summary.sent == 1 and summary.retried == 1 and not summary.broken
    assert world.delivered() == ["fine@example.com"]
    assert world.row(fine).state is OutboxState.sent
    assert world.row(odd).state is OutboxState.retry
    assert world.row(odd).last_error.startswith("build error: HeaderInjection")
    world.sender.run_pass(world.row(odd).due_at)
    assert world.row(odd).state is OutboxState.failed  # the message's own fault: given up in time


def test_a_template_that_cannot_be_rendered_is_held_without_counting_an_attempt(parts):
    world = World(parts, max_attempts=1)
    held = world.person(key="bcast:7", template="newsletter/gone.html.j2")
    fine = world.person()
    now = T0
    for _ in range(3):  # more passes than max_attempts
        summary = world.sender.run_pass(now)
        assert "newsletter/gone.html.j2" in summary.broken
        row = world.row(held)
        assert row.state is OutboxState.retry and row.attempts == 0 and row.due_at == now + RENDER_RETRY
        assert row.last_error.startswith("render error")
        now = row.due_at
    assert world.row(fine).state is OutboxState.sent


def test_too_many_bounces_in_a_run_open_the_circuit_and_release_the_rest(parts):
    world = World(parts, breaker_min_sample=10, max_bounce_rate=0.05, chunk_size=5, batch_size=5)
    rows = [world.person() for _ in range(30)]
    world.transport.replies.extend(Reply(550, "5.1.1 no such user") for _ in range(30))
    with pytest.raises(CircuitOpen, match="bounced"):
        world.sender.run_pass(T0)
    states = [world.row(r).state for r in rows]
    # Judged after each chunk: the second one opens the circuit, the third may be under way.
    assert 10 <= states.count(OutboxState.failed) <= 15
    released = [world.row(r) for r in rows if world.row(r).state is OutboxState.queued]
    assert released and all(r.attempts == 0 and r.worker is None for r in released)
    assert OutboxState.sending not in states


def complained(parts, sends: int, *reports: tuple[str, int, timedelta]) -> World:
    """A world with ``sends`` emails sent two days ago, the (kind, person, age) reports, one message due."""
    world = World(parts, breaker_min_sample=100, max_complaint_rate=0.003)
    world.person()
    for _ in range(sends):
        world.store.record_event("sent", T0 - timedelta(days=2), None)
    for kind, person, age in reports:
        world.store.record_event(kind, T0 - age, person)
    return world


def test_verified_complaints_over_the_limit_stop_the_pass_before_anything_is_claimed(parts):
    world = complained(parts, 200, ("complained", 1, timedelta(days=1)))  # 1 in 200: 0.5%
    with pytest.raises(CircuitOpen, match="1 spam complaints for 200 emails"):
        world.sender.run_pass(T0)
    assert "claim" not in world.store.calls and world.transport.sent == []


@pytest.mark.parametrize("reports", [
    [("unverified", 1, timedelta(days=1))],  # a report nobody vouched for counts for nothing
    [("complained", 1, timedelta(days=8))],  # older than a week
], ids=["unverified", "old"])
def test_complaints_that_do_not_count(parts, reports):
    assert complained(parts, 200, *reports).sender.run_pass(T0).sent == 1


def test_complaints_count_people_not_reports(parts):
    relayed = [("complained", 1, timedelta(days=1))] * 3  # one reader, relayed three times: 1 in 400
    assert complained(parts, 400, *relayed).sender.run_pass(T0).sent == 1
    with pytest.raises(CircuitOpen):  # three readers in 400: 0.75%
        complained(parts, 400, *[("complained", p, timedelta(days=1)) for p in (1, 2, 3)]).sender.run_pass(T0)


def test_a_row_taken_over_mid_pass_is_neither_sent_nor_recorded_here(parts):
    world = World(parts, lease=timedelta(seconds=10), chunk_size=5)
    first, second, third = world.person("a@example.com"), world.person("b@example.com"), world.person("c@example.com")

    def stall(recipient: str) -> None:
        if recipient == "a@example.com":  # the first send takes past half the lease, and meanwhile
            world.clock += timedelta(seconds=6)  # another worker takes the second row over
            world.store.take_over(second, "elsewhere", world.clock + timedelta(seconds=10))

    world.transport.on_send = stall
    summary = world.sender.run_pass(T0)
    assert world.delivered() == ["a@example.com", "c@example.com"]
    assert summary.sent == 2
    assert world.row(second).state is OutboxState.sending and world.row(second).worker == "elsewhere"
    assert world.row(first).state is world.row(third).state is OutboxState.sent
    assert "renew" in world.store.calls


def test_outcomes_are_kept_and_written_when_the_store_fails_for_a_moment(parts):
    # Recording what the server already has waits up to a lease, whatever db_patience says.
    world = World(parts, db_patience=timedelta(0), lease=timedelta(seconds=30))
    rows = [world.person() for _ in range(3)]
    world.store.fail("record", times=2)
    summary = world.sender.run_pass(T0)
    assert summary.sent == 3 and len(world.transport.sent) == 3
    assert all(world.row(r).state is OutboxState.sent for r in rows)
    assert world.store.calls.count("record") == 3


def test_outcomes_not_written_stay_leased_never_released(parts):
    world = World(parts, lease=timedelta(seconds=0.3))
    rows = [world.person() for _ in range(3)]
    world.store.fail("record", times=10_000)
    with pytest.raises(DatabaseDown, match="reached the mail server but are not recorded"):
        world.sender.run_pass(T0)
    assert len(world.transport.sent) == 3
    # Still ours until the lease runs out: released, they would go again at once.
    assert all(world.row(r).state is OutboxState.sending and world.row(r).worker == "here" for r in rows)


def test_a_store_that_stays_away_ends_the_pass_in_one_line(parts):
    world = World(parts, db_patience=timedelta(0))
    world.person()
    world.store.fail("claim", times=1)
    with pytest.raises(DatabaseDown, match="database unreachable while claiming messages"):
        world.sender.run_pass(T0)
    assert world.transport.sent == []


def test_an_unreachable_server_stops_the_pass_with_nothing_marked_sent(parts):
    world = World(parts, chunk_size=5)
    rows = [world.person() for _ in range(8)]
    world.transport.replies.extend(Unreachable("connection refused") for _ in range(8))  # down for good
    with pytest.raises(TransportDown, match="nothing was marked sent"):
        world.sender.run_pass(T0)
    assert world.transport.sent == []
    assert all(world.row(r).state is OutboxState.queued and world.row(r).attempts == 0 for r in rows)


def test_a_server_lost_halfway_keeps_what_went_and_gives_back_the_rest(parts):
    world = World(parts, chunk_size=5)
    rows = [world.person() for _ in range(4)]
    world.transport.replies.extend([Reply(250, "2.0.0 OK"), *(Unreachable("connection reset") for _ in range(3))])
    with pytest.raises(TransportDown):
        world.sender.run_pass(T0)
    assert [world.row(r).state for r in rows] == [OutboxState.sent] + [OutboxState.queued] * 3


def test_limit_sends_no_more_than_asked(parts):
    world = World(parts, chunk_size=2)
    rows = [world.person() for _ in range(10)]
    summary = world.sender.run_pass(T0, limit=3)
    assert summary.sent == 3 and len(world.transport.sent) == 3
    assert sum(world.row(r).state is OutboxState.queued for r in rows) == 7


def test_who_still_wants_their_mail_is_checked_again_before_each_chunk(parts):
    world = World(parts, chunk_size=2)
    rows = [world.person(f"r{i}@example.com") for i in range(4)]
    leaver = world.row(rows[3]).subscriber_id

    def leave(recipient: str) -> None:
        if recipient == "r0@example.com":  # claimed already; unsubscribes while the first chunk goes
            world.store.people[leaver].status = Status.unsubscribed

    world.transport.on_send = leave
    summary = world.sender.run_pass(T0)
    assert world.delivered() == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert summary.suppressed == 1 and world.row(rows[3]).state is OutboxState.suppressed
