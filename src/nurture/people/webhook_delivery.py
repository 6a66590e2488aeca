"""Delivering webhooks: claim due deliveries under an owned lease, POST them signed, record.

The same discipline as the mail outbox (:mod:`nurture.sending.outbox`): a worker claims a batch in
one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; ``BEGIN IMMEDIATE`` serialises
claimers on SQLite), marks it ``sending`` with its name and a lease, posts outside any
transaction, and records each answer in a short transaction of its own, only for rows it still
owns. A worker that dies leaves rows whose lease runs out; the next claim posts them again, so a
receiver may see an event twice (at least once: it deduplicates by ``Nurture-Event-Id``).

A 2xx answer within the timeout is delivered; anything else (another status, a redirect, a
refused connection, a timeout) is retried with exponential backoff and jitter, and logged with
its status and a one-line reason. After a failure, the endpoint's other deliveries in the batch
wait for that retry rather than each wait out their own timeout. An endpoint with no success for
a day while its deliveries failed is paused; it gets nothing until resumed.

This runs on its own (the scheduler's webhook job, ``nurture webhooks deliver``), never inside
the mail pass: a hung receiver holds up only webhooks.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from nurture.db import transaction
from nurture.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from nurture.webhook_signing import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
BATCH = 20
# 20 posts of at most a few timeouts each fit well inside it; a worker stops starting posts once
# half of it is gone, so nobody else may claim a row while it is being posted.
LEASE = timedelta(minutes=5)
FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)
PAUSE_AFTER = timedelta(days=1)
MAX_PER_PASS = 1000


@dataclass(frozen=True)
class Job:
    """A claimed delivery and what posting it needs."""

    delivery_id: int
    endpoint_id: int
    url: str
    secret: str
    event_id: str
    body: bytes
    attempts: int  # made before this one


@dataclass(frozen=True)
class Answer:
    """What an endpoint answered: an HTTP status (None when none came) and a one-line reason."""

    status: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Poster = Callable[[str, bytes, dict, float], Answer]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is an answer like any other non-2xx: logged and retried


_OPENER = urllib.request.build_opener(_NoRedirects)


def http_post(url: str, body: bytes, headers: dict, timeout: float) -> Answer:
    """POST ``body`` to ``url``; every failure becomes an Answer, never an exception."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, f"HTTP {exc.code} {exc.reason}"[:200])
    except (TimeoutError, socket.timeout):
        return Answer(None, f"no answer within {timeout:g} s")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return Answer(None, f"no answer within {timeout:g} s")
        return Answer(None, f"cannot connect: {reason}"[:200])
    except (OSError, ValueError) as exc:  # a reset connection, a malformed answer
        return Answer(None, f"{type(exc).__name__}: {exc}"[:200])


def headers_for(job: Job, now: datetime) -> dict:
    """The signed request's headers (documented in the README's Webhooks section)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "nurture-webhooks/1",
        EVENT_ID_HEADER: job.event_id,
        TIMESTAMP_HEADER: str(int(now.timestamp())),
        SIGNATURE_HEADER: sign(job.secret, job.body, now),
    }


def backoff(attempts: int, rng: random.Random) -> timedelta:
    """The wait after the ``attempts``-th failure: 30 s doubling, at most an hour, ± 20%."""
    base = min(FIRST_RETRY * (2 ** min(attempts - 1, 16)), LONGEST_RETRY)
    return base * rng.uniform(0.8, 1.2)


def claim(session: Session, *, worker: str, now: datetime, limit: int, lease: timedelta = LEASE) -> list[Job]:
    """Claim up to ``limit`` due deliveries of endpoints not paused, leased to ``worker``."""
    D = WebhookDelivery
    due = or_(and_(D.state.in_(("queued", "retry")), D.due_at <= now),
              and_(D.state == "sending", D.lease_until < now))
    rows = session.execute(
        select(D.id, D.endpoint_id, WebhookEndpoint.url, WebhookEndpoint.secret, WebhookEvent.public_id,
               WebhookEvent.body, D.attempts)
        .join(WebhookEndpoint, WebhookEndpoint.id == D.endpoint_id)
        .join(WebhookEvent, WebhookEvent.id == D.event_id)
        .where(due, WebhookEndpoint.paused_at.is_(None))
        .order_by(D.due_at, D.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=D)
    ).all()
    jobs = [Job(i, e, url, secret, pid, body.encode("utf-8"), n) for i, e, url, secret, pid, body, n in rows]
    if jobs:
        session.execute(update(D).where(D.id.in_([j.delivery_id for j in jobs]))
                        .values(state="sending", worker=worker, lease_until=now + lease))
    return jobs


def record(session: Session, job: Job, answer: Answer, *, worker: str, now: datetime,
           rng: random.Random) -> datetime | None:
    """Write one attempt's outcome (if the row is still ``worker``'s) and log it; pause the endpoint
    after a day of failures. Returns when it is tried again (None: delivered)."""
    mine = and_(WebhookDelivery.id == job.delivery_id, WebhookDelivery.state == "sending",
                WebhookDelivery.worker == worker)
    session.execute(insert(WebhookAttempt).values(delivery_id=job.delivery_id, endpoint_id=job.endpoint_id,
                                                  at=now, status=answer.status, ok=answer.ok, reason=answer.reason))
    endpoint = session.get(WebhookEndpoint, job.endpoint_id, with_for_update={"key_share": True})
    if answer.ok:
        session.execute(update(WebhookDelivery).where(mine).values(
            state="delivered", delivered_at=now, attempts=job.attempts + 1, worker=None, lease_until=None,
            last_error=None))
        if endpoint is not None:
            endpoint.last_success_at, endpoint.failing_since = now, None
        return None
    next_at = now + backoff(job.attempts + 1, rng)
    session.execute(update(WebhookDelivery).where(mine).values(
        state="retry", due_at=next_at, attempts=job.attempts + 1, worker=None, lease_until=None,
        last_error=answer.reason))
    if endpoint is not None:
        endpoint.last_failure_at, endpoint.last_failure_reason = now, answer.reason
        endpoint.failing_since = endpoint.failing_since or now
        if endpoint.paused_at is None and now - endpoint.failing_since >= PAUSE_AFTER:
            endpoint.paused_at = now
            log.warning("webhook endpoint %d (%s) paused: no success for a day; `nurture webhooks resume %d` "
                        "sends what waits", endpoint.id, endpoint.url, endpoint.id)
    return next_at


def put_back(session: Session, jobs: list[Job], *, worker: str, due_at: datetime | None = None) -> None:
    """Hand claimed deliveries back untried (due at ``due_at``, or as they were)."""
    for job in jobs:
        values = dict(state="retry" if job.attempts else "queued", worker=None, lease_until=None)
        if due_at is not None:
            values["due_at"] = due_at
        session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == job.delivery_id, WebhookDelivery.worker == worker,
            WebhookDelivery.state == "sending").values(**values))


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    delivered: int = 0
    failed: int = 0
    waiting: int = 0  # claimed but handed back: their endpoint had just failed, or time ran short
    reasons: dict[str, str] = field(default_factory=dict)  # endpoint URL -> its latest failure

    def line(self) -> str:
        text = f"webhooks: {self.delivered} delivered, {self.failed} failed (retried later)"
        if self.waiting:
            text += f", {self.waiting} waiting on a failing endpoint"
        return text


class Deliverer:
    """One worker's delivery passes over a database, with a clock and a way to POST (both injected
    in tests: a moved clock, a receiver on loopback)."""

    def __init__(self, sessions: sessionmaker[Session], *, clock: Callable[[], datetime], post: Poster = http_post,
                 timeout: float = TIMEOUT_SECONDS, batch: int = BATCH, lease: timedelta = LEASE,
                 rng: random.Random | None = None) -> None:
        self.sessions, self.clock, self.post = sessions, clock, post
        self.timeout, self.batch, self.lease = timeout, batch, lease
        self.rng = rng or random.Random()
        self.worker = f"hooks-{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def run(self, stop: threading.Event | None = None) -> DeliveryReport:
        """Post everything due, a batch at a time, until nothing is due (or ``stop`` is set)."""
        report = DeliveryReport()
        while report.delivered + report.failed < MAX_PER_PASS and not (stop and stop.is_set()):
            claimed_at = self.clock()
            with transaction(self.sessions) as session:
                jobs = claim(session, worker=self.worker, now=claimed_at, limit=self.batch, lease=self.lease)
            if not jobs:
                break
            self._post_batch(jobs, claimed_at, report, stop)
        return report

    def _post_batch(self, jobs: list[Job], claimed_at: datetime, report: DeliveryReport,
                    stop: threading.Event | None) -> None:
        failed_until: dict[int, datetime] = {}  # endpoint -> its retry, for the rest of this batch
        for index, job in enumerate(jobs):
            now = self.clock()
            if now - claimed_at > self.lease / 2 or (stop and stop.is_set()):
                self._hand_back(jobs[index:], report)
                return
            if job.endpoint_id in failed_until:
                self._hand_back([job], report, due_at=failed_until[job.endpoint_id])
                continue
            answer = self.post(job.url, job.body, headers_for(job, now), self.timeout)
            with transaction(self.sessions) as session:
                next_at = record(session, job, answer, worker=self.worker, now=self.clock(), rng=self.rng)
            if next_at is None:
                report.delivered += 1
            else:
                report.failed += 1
                report.reasons[job.url] = answer.reason
                failed_until[job.endpoint_id] = next_at
                log.info("webhook %s to %s failed (%s); next try %s", job.event_id, job.url, answer.reason,
                         f"{next_at:%Y-%m-%d %H:%M:%S} UTC")

    def _hand_back(self, jobs: list[Job], report: DeliveryReport, due_at: datetime | None = None) -> None:
        with transaction(self.sessions) as session:
            put_back(session, jobs, worker=self.worker, due_at=due_at)
        report.waiting += len(jobs)
