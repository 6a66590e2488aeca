"""Pass records: one per pass however it ends, counts per stream, and pruning that never makes a
total go down."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from nurture.db import transaction
from nurture.models import OutboxState, PassRecord
from nurture.sending.outbox import Claim, Outcome
from nurture.sending.pass_log import CARRIED, DURATION_BUCKETS, PassRun, bucket_of, fold, prune, recorded_pass, write
from nurture.sending.pass_summary import CircuitOpen, PassSummary, TransportDown

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


class Ticks:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float = 2.0) -> None:
        self.now, self.step = T0, timedelta(seconds=step)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def outcome(key: str, state: OutboxState, bounced: bool = False) -> Outcome:
    claim = Claim(1, key, "t.html.j2", 1, 0, False, 1, "a@example.com", None, "UTC")
    return Outcome(claim, state, bounced=bounced)


def test_a_summary_counts_each_stream_and_adds_another_process_s():
    summary = PassSummary()
    for o in (outcome("seq:nurture:welcome", OutboxState.sent), outcome("seq:nurture:risks", OutboxState.retry),
              outcome("bcast:3", OutboxState.failed, bounced=True), outcome("sys:confirm:1", OutboxState.sent)):
        summary.add(o)
    other = PassSummary()
    other.add(outcome("seq:nurture:welcome", OutboxState.sent))
    summary.include(other)
    assert (summary.sent, summary.retried, summary.failed, summary.bounced) == (3, 1, 1, 1)
    assert summary.streams == {"sequence": {"sent": 2, "retried": 1}, "newsletter": {"failed": 1, "bounced": 1},
                               "transactional": {"sent": 1}}


def records(sessions) -> list[PassRecord]:
    with sessions() as session:
        return list(session.scalars(select(PassRecord).order_by(PassRecord.id)))


def test_a_finished_pass_is_recorded_with_its_counts_and_the_real_duration(sqlite_runtime):
    summary = PassSummary(planned=4)
    summary.add(outcome("seq:nurture:welcome", OutboxState.sent))
    with recorded_pass(sqlite_runtime.sessions, Ticks(3.0)) as run:
        run.summary = summary
    [record] = records(sqlite_runtime.sessions)
    assert (record.outcome, record.reason, record.planned, record.seconds) == ("ok", None, 4, 3.0)
    assert record.counts == {"sequence": {"sent": 1}} and record.pass_id == run.pass_id


@pytest.mark.parametrize("error, outcome_, reason", [
    (CircuitOpen("paused: 3 of 10 bounced"), "breaker", "paused: 3 of 10 bounced"),
    (TransportDown("connection refused"), "stopped", "mail server unreachable"),
    (ZeroDivisionError("division by zero"), "error", "ZeroDivisionError: division by zero"),
])
def test_a_pass_that_stops_is_recorded_with_why_and_the_exception_goes_on(sqlite_runtime, error, outcome_, reason):
    with pytest.raises(type(error)):
        with recorded_pass(sqlite_runtime.sessions, Ticks()):
            raise error
    [record] = records(sqlite_runtime.sessions)
    assert record.outcome == outcome_ and record.reason.startswith(reason)


def test_a_pass_with_a_broken_template_is_recorded_as_broken(sqlite_runtime):
    with recorded_pass(sqlite_runtime.sessions, Ticks()) as run:
        run.summary = PassSummary(broken={"nurture/10-welcome.html.j2": "line 3: boom"})
    assert records(sqlite_runtime.sessions)[0].outcome == "broken"


def test_a_record_that_cannot_be_written_is_logged_not_raised(caplog):
    def no_database():
        raise OSError("database is gone")

    with recorded_pass(no_database, Ticks()) as run:  # type: ignore[arg-type]
        run.summary = PassSummary()
    assert "was not written" in caplog.text


def test_pruning_folds_the_oldest_into_the_carried_row_and_keeps_every_total(sqlite_runtime):
    sessions = sqlite_runtime.sessions
    for i, seconds in enumerate((0.5, 2.0, 20.0, 4000.0, 0.1)):
        summary = PassSummary()
        summary.add(outcome("seq:nurture:welcome", OutboxState.sent))
        summary.add(outcome("sys:confirm:1", OutboxState.failed, bounced=i % 2 == 0))
        run = PassRun(f"p{i}", T0, summary=summary, outcome="ok")
        write(sessions, run, finished_at=T0 + timedelta(seconds=seconds))
    with sessions() as session:
        before = fold({}, list(session.scalars(select(PassRecord))))
    with transaction(sessions) as session:
        assert prune(session, keep=2) == 3
        assert prune(session, keep=2) == 0
    kept = records(sessions)
    assert sorted(r.pass_id for r in kept) == sorted([CARRIED, "p3", "p4"])
    [carried] = [r for r in kept if r.outcome == CARRIED]
    rest = [r for r in kept if r.outcome != CARRIED]
    assert fold(carried.counts, rest) == before
    assert before["sequence"]["sent"] == 5 and before["transactional"] == {"sent": 0, "retried": 0, "failed": 5,
                                                                           "bounced": 3, "unknown": 0}
    assert carried.seconds == pytest.approx(22.5)


def test_durations_fall_in_their_bucket():
    assert bucket_of(0.0) == 0 and bucket_of(1.0) == 0 and bucket_of(1.01) == 1
    assert bucket_of(DURATION_BUCKETS[-1] + 1) == len(DURATION_BUCKETS)


class FakePasses:
    def __init__(self, result: PassSummary | BaseException) -> None:
        self.result = result

    def run(self, now, *, stop):
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_each_scheduled_pass_leaves_a_record_even_when_it_stops(sqlite_runtime, caplog):
    import threading

    from nurture.scheduler import send_job

    summary = PassSummary(planned=1)
    summary.add(outcome("bcast:2", OutboxState.sent))
    send_job(FakePasses(summary), threading.Event(), clock=Ticks(), sessions=sqlite_runtime.sessions)  # type: ignore[arg-type]
    send_job(FakePasses(CircuitOpen("paused: too many complaints")), threading.Event(), clock=Ticks(),  # type: ignore[arg-type]
             sessions=sqlite_runtime.sessions)
    first, second = records(sqlite_runtime.sessions)
    assert (first.outcome, first.counts) == ("ok", {"newsletter": {"sent": 1}})
    assert (second.outcome, second.reason) == ("breaker", "paused: too many complaints")
    assert [r.pass_id for r in caplog.records if r.levelname == "ERROR"] == [second.pass_id]


@pytest.mark.postgres
def test_pruning_on_postgresql_under_its_advisory_lock(postgres_url, tmp_path):
    from nurture.db import make_engine, session_factory

    engine = make_engine(postgres_url)
    sessions = session_factory(engine)
    try:
        for i in range(4):
            write(sessions, PassRun(f"p{i}", T0, summary=PassSummary(), outcome="ok"), finished_at=T0)
        with transaction(sessions) as session:
            assert prune(session, keep=1) == 3
        assert sorted(r.pass_id for r in records(sessions)) == [CARRIED, "p3"]
    finally:
        engine.dispose()
