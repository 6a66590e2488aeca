"""The outbox's functions on a real SQLite file: queueing once, what a claim takes and in what order,
who still wants a message, owned leases, what an outcome writes, what a release gives back, and the
rates the circuit breaker reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from nurture.db import make_engine, session_factory, transaction
from nurture.models import UNPLANNED, Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.sending import outbox
from nurture.sending.outbox import Outcome

from factories import subscriber

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
LEASE = timedelta(minutes=5)
WELCOME = "nurture/10-welcome-history.html.j2"


@pytest.fixture
def sessions(sqlite_url):
    engine = make_engine(sqlite_url)
    yield session_factory(engine)
    engine.dispose()


def person(sessions, email: str, **wishes) -> int:
    return subscriber(sessions, email, T0, **wishes)


def queue(sessions, sid: int, key: str, due: datetime = T0, template: str = WELCOME) -> None:
    with transaction(sessions) as session:
        outbox.enqueue(session, subscriber_id=sid, key=key, template=template, due_at=due, now=T0)


def rows(sessions) -> dict[str, OutboxMessage]:
    with sessions() as session:
        return {row.key: row for row in session.scalars(select(OutboxMessage))}


def rows_list(sessions) -> list[OutboxMessage]:
    with sessions() as session:
        return list(session.scalars(select(OutboxMessage)))


def claim(sessions, worker: str = "w1", *, now: datetime = T0, real_now: datetime = T0, limit: int = 10, **kw):
    with transaction(sessions) as session:
        return outbox.claim_batch(session, worker=worker, now=now, real_now=real_now, limit=limit, lease=LEASE, **kw)


def set_row(sessions, key: str, **values) -> None:
    with transaction(sessions) as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.key == key).values(**values))


@pytest.mark.parametrize("key, status, series, newsletter, expected", [
    ("sys:confirm:1", Status.pending, True, True, True),
    ("sys:confirm:1", Status.confirmed, True, True, False),
    ("seq:nurture:welcome", Status.confirmed, True, False, True),
    ("seq:nurture:welcome", Status.confirmed, False, True, False),
    ("bcast:3", Status.confirmed, False, True, True),
    ("bcast:3", Status.confirmed, True, False, False),
    ("bcast:3", Status.unsubscribed, True, True, False),
    ("seq:nurture:welcome", Status.bounced, True, True, False),
])
def test_who_wants_which_message(key, status, series, newsletter, expected):
    assert outbox.wanted(key, status, series, newsletter) is expected


def test_a_message_is_queued_once_per_person_and_key(sessions):
    sid = person(sessions, "ann@example.com")
    queue(sessions, sid, "seq:nurture:welcome", T0)
    queue(sessions, sid, "seq:nurture:welcome", T0 + timedelta(days=1), template="other.html.j2")
    [row] = rows(sessions).values()
    assert (row.state, row.due_at, row.template, row.attempts) == (OutboxState.queued, T0, WELCOME, 0)


def test_a_claim_takes_expired_leases_then_retries_then_unknowns_then_queued_each_by_due_time(sessions):
    sid = person(sessions, "ann@example.com")
    for key, due in [("q:late", T0 - timedelta(minutes=1)), ("q:early", T0 - timedelta(minutes=9)),
                     ("r", T0), ("u", T0), ("u:twice", T0), ("s", T0), ("s:live", T0), ("q:future", T0 + timedelta(seconds=1))]:
        queue(sessions, sid, f"bcast:{key}", due)
    set_row(sessions, "bcast:r", state=OutboxState.retry)
    set_row(sessions, "bcast:u", state=OutboxState.unknown, unknowns=1)
    set_row(sessions, "bcast:u:twice", state=OutboxState.unknown, unknowns=2)  # resent twice already: no more
    set_row(sessions, "bcast:s", state=OutboxState.sending, worker="dead", lease_until=T0 - timedelta(seconds=1))
    set_row(sessions, "bcast:s:live", state=OutboxState.sending, worker="alive", lease_until=T0 + timedelta(seconds=1))
    claims, suppressed = claim(sessions)
    assert [c.key for c in claims] == ["bcast:s", "bcast:r", "bcast:u", "bcast:q:early", "bcast:q:late"]
    assert suppressed == 0
    after = rows(sessions)
    assert all(after[c.key].worker == "w1" and after[c.key].lease_until == T0 + LEASE for c in claims)
    assert after["bcast:s:live"].worker == "alive"
    assert {c.key: c.attempts for c in claims}["bcast:r"] == 1  # including this one


def test_a_claim_keeps_to_its_limit_its_prefix_and_may_leave_unknowns_alone(sessions):
    sid = person(sessions, "ann@example.com")
    queue(sessions, sid, "sys:confirm:1")
    queue(sessions, sid, "bcast:1")
    queue(sessions, sid, "bcast:2", T0 - timedelta(minutes=1))
    set_row(sessions, "bcast:1", state=OutboxState.unknown)
    with transaction(sessions) as session:
        session.execute(update(Subscriber).values(status=Status.pending))
    claims, _ = claim(sessions, key_prefix="sys:", limit=5)
    assert [c.key for c in claims] == ["sys:confirm:1"]
    with transaction(sessions) as session:
        session.execute(update(Subscriber).values(status=Status.confirmed))
    claims, _ = claim(sessions, "w2", limit=1, resend_unknown=False)
    assert [c.key for c in claims] == ["bcast:2"]
    assert claim(sessions, "w3", resend_unknown=False) == ([], 0)


def test_a_claim_suppresses_what_is_no_longer_wanted(sessions):
    keen = person(sessions, "keen@example.com")
    gone = person(sessions, "gone@example.com", status=Status.unsubscribed)
    no_news = person(sessions, "nonews@example.com", newsletter=False)
    queue(sessions, keen, "bcast:1")
    queue(sessions, gone, "seq:nurture:welcome")
    queue(sessions, no_news, "bcast:1")
    claims, suppressed = claim(sessions)
    assert [c.email for c in claims] == ["keen@example.com"] and suppressed == 2
    states = {(r.subscriber_id, r.key): r.state for r in rows_list(sessions)}
    assert states[(gone, "seq:nurture:welcome")] is states[(no_news, "bcast:1")] is OutboxState.suppressed
    with sessions() as session:  # a suppressed newsletter holds no day: the planner looks again
        assert session.get(Subscriber, no_news).next_due_at == UNPLANNED
        assert session.get(Subscriber, gone).next_due_at != UNPLANNED


def test_due_rows_are_counted_up_to_a_bound(sessions):
    sid = person(sessions, "ann@example.com")
    for i in range(5):
        queue(sessions, sid, f"bcast:{i}", T0 - timedelta(minutes=i))
    queue(sessions, sid, "bcast:later", T0 + timedelta(hours=1))
    with sessions() as session:
        assert outbox.count_due(session, now=T0, at_most=100) == 5
        assert outbox.count_due(session, now=T0, at_most=3) == 3


def test_the_pre_send_check_answers_for_the_people_as_they_are_now(sessions):
    stays = person(sessions, "stays@example.com")
    leaves = person(sessions, "leaves@example.com")
    queue(sessions, stays, "seq:nurture:welcome")
    queue(sessions, leaves, "seq:nurture:welcome")
    claims, _ = claim(sessions)
    with transaction(sessions) as session:
        session.execute(update(Subscriber).where(Subscriber.id == leaves).values(wants_series=False))
    with sessions() as session:
        assert outbox.still_wanted(session, claims) == {c.id for c in claims if c.subscriber_id == stays}
        assert outbox.still_wanted(session, []) == set()


def test_renewing_extends_the_leases_still_held_and_says_which(sessions):
    sid = person(sessions, "ann@example.com")
    queue(sessions, sid, "bcast:1")
    queue(sessions, sid, "bcast:2")
    claims, _ = claim(sessions)
    taken = claims[1].id
    with transaction(sessions) as session:  # lost after its lease ran out
        session.execute(update(OutboxMessage).where(OutboxMessage.id == taken).values(worker="other"))
    with transaction(sessions) as session:
        assert outbox.renew(session, worker="w1", until=T0 + 2 * LEASE) == {claims[0].id}
        assert outbox.owned(session, worker="w1", ids=[c.id for c in claims]) == {claims[0].id}
    assert rows(sessions)["bcast:1"].lease_until == T0 + 2 * LEASE


def test_outcomes_are_written_only_for_rows_still_held(sessions):
    sid = person(sessions, "ann@example.com")
    for key in ("bcast:sent", "bcast:retry", "bcast:held", "bcast:unknown", "bcast:lost"):
        queue(sessions, sid, key)
    claims = {c.key: c for c in claim(sessions)[0]}
    set_row(sessions, "bcast:lost", worker="other")
    later = T0 + timedelta(minutes=30)
    outcomes = [
        Outcome(claims["bcast:sent"], OutboxState.sent, "250 OK"),
        Outcome(claims["bcast:retry"], OutboxState.retry, "451 later", later),
        Outcome(claims["bcast:held"], OutboxState.retry, "render error: x", later, content_error=True),
        Outcome(claims["bcast:unknown"], OutboxState.unknown, "no reply", later),
        Outcome(claims["bcast:lost"], OutboxState.sent, "250 OK"),
    ]
    now = T0 + timedelta(minutes=1)
    with transaction(sessions) as session:
        written = outbox.record_outcomes(session, outcomes, now=now, worker="w1")
    assert [o.claim.key for o in written] == ["bcast:sent", "bcast:retry", "bcast:held", "bcast:unknown"]
    after = rows(sessions)
    sent = after["bcast:sent"]
    assert (sent.state, sent.sent_at, sent.last_error, sent.worker, sent.attempts) == (OutboxState.sent, now, None, None, 1)
    assert (after["bcast:retry"].due_at, after["bcast:retry"].last_error, after["bcast:retry"].attempts) == (later, "451 later", 1)
    assert after["bcast:held"].attempts == 0  # a template that cannot be rendered did not try
    assert after["bcast:unknown"].unknowns == 1
    assert after["bcast:lost"].state is OutboxState.sending and after["bcast:lost"].worker == "other"
    with sessions() as session:
        assert [(e.kind, e.outbox_id) for e in session.scalars(select(Event))] == [("sent", claims["bcast:sent"].id)]


def test_a_reply_any_database_stores(sessions):
    sid = person(sessions, "ann@example.com")
    queue(sessions, sid, "bcast:1")
    [claimed], _ = claim(sessions)
    with transaction(sessions) as session:
        outbox.record_outcomes(session, [Outcome(claimed, OutboxState.failed, "550 \x00bad \ud800" + "x" * 900)], now=T0)
    error = rows(sessions)["bcast:1"].last_error
    assert len(error) == 500 and "\x00" not in error and error.startswith("550 \ufffdbad ?")


def test_a_release_gives_back_only_what_was_named_and_uncounts_the_attempt(sessions):
    sid = person(sessions, "ann@example.com")
    for key in ("bcast:1", "bcast:2", "bcast:3"):
        queue(sessions, sid, key)
    claims = {c.key: c for c in claim(sessions)[0]}
    with transaction(sessions) as session:
        assert outbox.release(session, worker="w1", ids=[]) == 0
        assert outbox.release(session, worker="someone-else", ids=[claims["bcast:1"].id]) == 0
        assert outbox.release(session, worker="w1", ids=[claims["bcast:1"].id, claims["bcast:2"].id]) == 2
    after = rows(sessions)
    assert [(after[k].state, after[k].attempts, after[k].worker) for k in ("bcast:1", "bcast:2")] == \
        [(OutboxState.queued, 0, None)] * 2
    assert after["bcast:3"].state is OutboxState.sending
    with transaction(sessions) as session:
        assert outbox.release(session, worker="w1") == 1  # all of them (a graceful stop)


def test_cancelling_suppresses_open_rows_with_those_prefixes(sessions):
    sid = person(sessions, "ann@example.com")
    for key in ("seq:nurture:a", "bcast:1", "sys:confirm:2"):
        queue(sessions, sid, key)
    queue(sessions, sid, "seq:nurture:done")
    set_row(sessions, "seq:nurture:done", state=OutboxState.sent)
    with transaction(sessions) as session:
        outbox.cancel_pending(session, sid, ("seq:", "bcast:"), now=T0)
    after = rows(sessions)
    assert {k: r.state for k, r in after.items()} == {
        "seq:nurture:a": OutboxState.suppressed, "bcast:1": OutboxState.suppressed,
        "sys:confirm:2": OutboxState.queued, "seq:nurture:done": OutboxState.sent}
    with sessions() as session:
        assert session.get(Subscriber, sid).next_due_at == UNPLANNED


def test_the_rates_count_people_who_complained_and_stop_counting_sends_when_told(sessions):
    ann, bob = person(sessions, "ann@example.com"), person(sessions, "bob@example.com")
    with transaction(sessions) as session:
        for kind, who, age in [("complained", ann, 1), ("complained", ann, 2), ("complained", bob, 9),
                               ("unverified", bob, 1)] + [("sent", ann, 1)] * 7 + [("sent", bob, 8)]:
            outbox.record_event(session, kind, T0 - timedelta(days=age), subscriber_id=who)
    since = T0 - timedelta(days=7)
    with sessions() as session:
        assert outbox.recent_complainers(session, since=since) == 1
        assert outbox.recent_sent(session, since=since) == 7
        assert outbox.recent_sent(session, since=since, at_most=3) == 3
        assert outbox.recent_rates(session, since=since) == (1, 7)
