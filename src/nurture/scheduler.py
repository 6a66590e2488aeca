"""APScheduler wiring only: run a sending pass every N minutes, coalescing missed runs, and
deliver webhooks every minute on a job of its own (so a hung receiver never holds up mail)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.orm import Session, sessionmaker

from nurture.clock import utcnow
from nurture.sending.pass_log import PassRun, recorded_pass
from nurture.sending.pass_summary import PassStopped
from nurture.sending_processes import SendingPass

if TYPE_CHECKING:
    from nurture.people.webhook_delivery import Deliverer

log = logging.getLogger(__name__)
WEBHOOK_INTERVAL_SECONDS = 60


def send_job(passes: SendingPass, stop: threading.Event, clock: Callable[[], datetime] = utcnow,
             sessions: sessionmaker[Session] | None = None) -> None:
    """One scheduled pass at ``clock()``, recorded in ``sessions``'s pass log (for /metrics) when
    given. Errors are logged, never raised: the next run tries again."""
    record = recorded_pass(sessions, clock) if sessions is not None else nullcontext(PassRun("-", clock()))
    run = None
    try:
        with record as run:
            run.summary = summary = passes.run(clock(), stop=stop)
        ids = {"pass_id": run.pass_id}
        log.info("scheduled pass: planned %d, %s", summary.planned, summary.line(), extra=ids)
        for template, reason in summary.broken.items():
            log.error("template %s cannot be rendered; its messages wait until it is fixed: %s", template, reason,
                      extra=ids)
    except PassStopped as exc:
        log.error("pass stopped, the next run tries again: %s", exc, extra={"pass_id": run and run.pass_id})
    except Exception:  # noqa: BLE001 - a scheduler must survive one bad pass
        log.exception("scheduled pass failed; the next run will try again", extra={"pass_id": run and run.pass_id})


def webhook_job(deliverer: Deliverer, stop: threading.Event) -> None:
    """One webhook delivery pass. Errors are logged, never raised: the next run tries again."""
    try:
        report = deliverer.run(stop)
        if report.delivered or report.failed:
            log.info("%s", report.line())
    except Exception:  # noqa: BLE001 - a scheduler must survive one bad pass
        log.exception("webhook delivery pass failed; the next run will try again")


def build_scheduler(passes: SendingPass, interval_minutes: int, stop: threading.Event, *, blocking: bool,
                    clock: Callable[[], datetime] = utcnow, sessions: sessionmaker[Session] | None = None,
                    deliverer: Deliverer | None = None):
    """A scheduler with one job, running now (by ``clock``) and then every ``interval_minutes``;
    with a ``deliverer``, a second job delivers webhooks every minute, in a thread of its own.

    One instance at a time per process (max_instances=1) and missed runs coalesce into one, so a
    long pass or a suspended laptop never stacks passes up."""
    cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = cls(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
    scheduler.add_job(send_job, "interval", minutes=interval_minutes, args=[passes, stop, clock, sessions], id="send-due",
                      next_run_time=clock())
    if deliverer is not None:
        scheduler.add_job(webhook_job, "interval", seconds=WEBHOOK_INTERVAL_SECONDS, args=[deliverer, stop],
                          id="webhooks", next_run_time=clock())
    return scheduler


def run_blocking(passes: SendingPass, interval_minutes: int, *, sessions: sessionmaker[Session] | None = None,
                 deliverer: Deliverer | None = None) -> None:
    """``nurture scheduler``: run until SIGTERM or Ctrl-C, finishing the message in flight; each
    pass recorded in ``sessions``'s pass log."""
    stop = threading.Event()
    scheduler = build_scheduler(passes, interval_minutes, stop, blocking=True, sessions=sessions, deliverer=deliverer)

    def shutdown(signum, _frame):
        log.info("stopping (signal %d): finishing the message in flight, releasing claims", signum)
        stop.set()
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    scheduler.start()
