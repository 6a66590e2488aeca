"""The scheduler's webhook job: its own job beside the sending pass, every minute, coalescing, and
a delivery pass that fails is logged, never raised."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from apscheduler.triggers.interval import IntervalTrigger

from nurture.people.webhook_delivery import DeliveryReport
from nurture.scheduler import build_scheduler, send_job, webhook_job
from nurture.sending.pass_summary import PassSummary

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)


class FakePasses:
    def run(self, now, *, stop):
        return PassSummary()


class FakeDeliverer:
    def __init__(self, result) -> None:
        self.result, self.stops = result, []

    def run(self, stop=None):
        self.stops.append(stop)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_webhooks_get_a_job_of_their_own_every_minute():
    deliverer, stop = FakeDeliverer(DeliveryReport()), threading.Event()
    scheduler = build_scheduler(FakePasses(), 15, stop, blocking=False, clock=lambda: NOW,  # type: ignore[arg-type]
                                deliverer=deliverer)  # type: ignore[arg-type]
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == {"send-due", "webhooks"}
    assert jobs["send-due"].func is send_job and jobs["webhooks"].func is webhook_job
    hooks = jobs["webhooks"]
    assert isinstance(hooks.trigger, IntervalTrigger) and hooks.trigger.interval == timedelta(minutes=1)
    assert hooks.args == (deliverer, stop) and hooks.next_run_time == NOW
    assert (hooks.coalesce, hooks.max_instances) == (True, 1)


def test_a_failed_delivery_pass_is_logged_and_the_stop_is_passed_on(caplog):
    stop = threading.Event()
    broken = FakeDeliverer(RuntimeError("database gone"))
    with caplog.at_level(logging.ERROR, logger="nurture.scheduler"):
        webhook_job(broken, stop)  # type: ignore[arg-type]
    assert broken.stops == [stop]
    assert "webhook delivery pass failed" in caplog.text and "database gone" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nurture.scheduler"):
        webhook_job(FakeDeliverer(DeliveryReport(delivered=2, failed=1)), stop)  # type: ignore[arg-type]
    assert "webhooks: 2 delivered, 1 failed" in caplog.text
