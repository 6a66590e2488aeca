"""The APScheduler wiring: one coalescing send job, and a pass that fails is logged, never raised."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from nurture.scheduler import build_scheduler, send_job
from nurture.sending.pass_summary import PassStopped, PassSummary, TransportDown

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)


class FakePasses:
    """Stands in for SendingPass: records the instants it was run at; returns or raises what it is given."""

    def __init__(self, result: PassSummary | BaseException) -> None:
        self.result = result
        self.runs: list[tuple[datetime, threading.Event]] = []

    def run(self, now: datetime, *, stop: threading.Event) -> PassSummary:
        self.runs.append((now, stop))
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_one_send_job_every_interval_starting_now() -> None:
    passes, stop = FakePasses(PassSummary()), threading.Event()
    scheduler = build_scheduler(passes, 5, stop, blocking=False, clock=lambda: NOW)  # type: ignore[arg-type]
    assert isinstance(scheduler, BackgroundScheduler)
    scheduler.start(paused=True)  # the job defaults are applied when the job reaches its store
    try:
        [job] = scheduler.get_jobs()
    finally:
        scheduler.shutdown(wait=False)
    assert job.id == "send-due" and job.func is send_job
    assert isinstance(job.trigger, IntervalTrigger) and job.trigger.interval == timedelta(minutes=5)
    assert job.next_run_time == NOW  # the first pass runs at once, not after an interval
    assert job.args[:2] == (passes, stop)
    # A long pass or a suspended laptop never stacks passes up.
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 3600)


def test_the_blocking_flavour_for_the_scheduler_command() -> None:
    scheduler = build_scheduler(FakePasses(PassSummary()), 1, threading.Event(), blocking=True)  # type: ignore[arg-type]
    assert isinstance(scheduler, BlockingScheduler)
    assert str(scheduler.timezone) == "UTC"


def test_a_job_runs_the_pass_at_the_clocks_time_and_logs_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    passes, stop = FakePasses(PassSummary(sent=3, planned=2)), threading.Event()
    with caplog.at_level(logging.INFO, logger="nurture.scheduler"):
        send_job(passes, stop, clock=lambda: NOW)  # type: ignore[arg-type]
    assert passes.runs == [(NOW, stop)]
    assert "scheduled pass: planned 2" in caplog.text


def test_a_broken_template_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    summary = PassSummary(broken={"nurture/10-welcome.html.j2": "layout.html.j2:3: unexpected '}'"})
    with caplog.at_level(logging.INFO, logger="nurture.scheduler"):
        send_job(FakePasses(summary), threading.Event(), clock=lambda: NOW)  # type: ignore[arg-type]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "nurture/10-welcome.html.j2" in error.getMessage() and "unexpected" in error.getMessage()


@pytest.mark.parametrize("stopped", [PassStopped("bounce rate 9% over the limit"), TransportDown("connection refused")])
def test_a_stopped_pass_is_logged_not_raised(stopped: PassStopped, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nurture.scheduler"):
        send_job(FakePasses(stopped), threading.Event(), clock=lambda: NOW)  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is None  # one line, no traceback
    assert record.getMessage() == f"pass stopped, the next run tries again: {stopped}"


def test_any_other_failure_is_logged_with_its_traceback_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nurture.scheduler"):
        send_job(FakePasses(RuntimeError("disk full")), threading.Event(), clock=lambda: NOW)  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "next run will try again" in record.getMessage()


def test_the_scheduler_runs_the_job_and_keeps_going_after_a_stopped_pass() -> None:
    ran = threading.Event()

    class Stopping(FakePasses):
        def run(self, now, *, stop):
            ran.set()
            return super().run(now, stop=stop)

    passes = Stopping(PassStopped("mail server refused everything"))
    scheduler = build_scheduler(passes, 60, threading.Event(), blocking=False)  # type: ignore[arg-type]
    scheduler.start()
    try:
        assert ran.wait(10)
        assert scheduler.get_job("send-due") is not None  # the job is still scheduled
    finally:
        scheduler.shutdown(wait=True)
    assert len(passes.runs) == 1
