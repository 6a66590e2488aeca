"""One sending pass: plan what is due, claim a batch, render, build, hand over, record.

Claims are short transactions; the transport is called outside any transaction. Messages of a
batch are sent in small chunks, each re-checked against the subscriber's current wishes just
before it goes (one query per chunk) and recorded just after (one transaction per chunk), so an
unsubscribe that commits mid-batch stops mail within one chunk, and a crash can only repeat the
messages of the chunk that was in flight.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr

from sqlalchemy.orm import Session, sessionmaker

from nurture import outbox, subscribers
from nurture.db import transaction
from nurture.links import Links
from nurture.messages import Dkim, build_message, message_id, sender_domain
from nurture.models import OutboxState, Status
from nurture.outbox import Claim, Outcome
from nurture.ratelimit import Pacer
from nurture.rendering import Rendered, Renderer
from nurture.tracking import Tracker
from nurture.transports import NoReply, Reply, Transport, Unreachable

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(minutes=15)
RETRY_FACTOR = 3  # 15 min, 45 min, 2 h 15, 6 h 45, 20 h: six attempts span about a day
UNKNOWN_RESEND_AFTER = timedelta(minutes=10)
_BOUNCE_STATUS = re.compile(r"\b5\.(1\.\d{1,3}|2\.1)\b")


class TransportDown(Exception):
    """The mail server could not be reached; nothing was marked sent, claims were released."""


class CircuitOpen(Exception):
    """Too many bounces in this run, or too many complaints lately: sending paused to protect the
    domain's reputation. Claims were released; nothing is lost."""


@dataclass
class PassSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0
    unknown: int = 0
    planned: int = 0

    def add(self, outcome: Outcome) -> None:
        if outcome.state is OutboxState.sent:
            self.sent += 1
        elif outcome.state is OutboxState.retry:
            self.retried += 1
        elif outcome.state is OutboxState.unknown:
            self.unknown += 1
        else:
            self.failed += 1
            self.bounced += outcome.bounced

    def line(self) -> str:
        return (f"sent {self.sent}, retried {self.retried}, failed {self.failed} "
                f"(bounced {self.bounced}), suppressed {self.suppressed}, unknown {self.unknown}")


@dataclass
class MailSettings:
    """What the sender needs to know, taken from Settings by the entry point."""

    from_header: str
    list_id: str
    secret: str
    max_attempts: int = 6
    resend_unknown: bool = True
    dev_recipient: str | None = None
    dkim: Dkim | None = None
    batch_size: int = 200
    chunk_size: int = 20
    threads: int = 1
    lease: timedelta = outbox.DEFAULT_LEASE
    max_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.003
    breaker_min_sample: int = 100  # rates over fewer messages say nothing

    @cached_property
    def envelope_sender(self) -> str:
        return parseaddr(self.from_header)[1]

    @cached_property
    def domain(self) -> str:
        return sender_domain(self.from_header)


Planner = Callable[[Session, datetime], int]


@dataclass
class Sender:
    sessions: sessionmaker[Session]
    renderer: Renderer
    transport: Transport
    links: Links
    settings: MailSettings
    planner: Planner | None = None
    tracker: Tracker | None = None
    pacer: Pacer = field(default_factory=Pacer)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")

    def run_pass(
        self,
        now: datetime,
        *,
        limit: int | None = None,
        key_prefix: str | None = None,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> PassSummary:
        """Send everything due at ``now`` (at most ``limit`` messages). Raises TransportDown.

        Claiming runs ahead of sending: the connections always have about two chunks waiting,
        so none of them idles while the next batch is claimed."""
        summary = PassSummary()
        if self.planner is not None and key_prefix is None:
            with transaction(self.sessions) as session:
                summary.planned = self.planner(session, now)
        if key_prefix is None or not key_prefix.startswith("sys:"):
            self._check_complaints(now)
        threads = max(1, self.settings.threads)
        abort = threading.Event()
        lock = threading.Lock()

        def halted() -> bool:
            return abort.is_set() or (stop is not None and stop.is_set())

        def run(chunk: list[Claim]) -> None:
            if halted():
                return  # left claimed; released below
            outcomes, suppressed = self._send_chunk(chunk, now)
            with lock:
                summary.suppressed += suppressed
                for outcome in outcomes:
                    summary.add(outcome)
            if progress:
                progress(len(chunk))

        remaining = limit
        pending: set = set()
        with ThreadPoolExecutor(threads, thread_name_prefix="nurture-send") as pool:
            try:
                while True:
                    while (remaining is None or remaining > 0) and len(pending) < 2 * threads and not halted():
                        size = self.settings.batch_size if remaining is None else min(remaining,
                                                                                        self.settings.batch_size)
                        claims, suppressed = self._claim(now, size, key_prefix)
                        with lock:
                            summary.suppressed += suppressed
                        if claims is None:
                            remaining = 0
                            break
                        if remaining is not None:
                            remaining -= len(claims)
                        step = self.settings.chunk_size
                        pending |= {pool.submit(run, claims[i:i + step]) for i in range(0, len(claims), step)}
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()  # re-raises TransportDown and the like, here
                    self._check_bounces(summary)
            finally:
                abort.set()
                wait(pending)
                with transaction(self.sessions) as session:
                    outbox.release(session, worker=self.worker)
        return summary

    def _check_bounces(self, summary: PassSummary) -> None:
        attempted = summary.sent + summary.failed + summary.retried + summary.unknown
        if attempted >= self.settings.breaker_min_sample and summary.bounced / attempted > self.settings.max_bounce_rate:
            raise CircuitOpen(
                f"paused: {summary.bounced} of {attempted} messages in this run bounced "
                f"({summary.bounced / attempted:.1%}, limit {self.settings.max_bounce_rate:.1%}); "
                "check where these addresses came from, then run again"
            )

    def _check_complaints(self, now: datetime) -> None:
        """Complaints arrive later, by feedback loop: judge the last week, before sending anything."""
        with self.sessions() as session:
            complaints, sent = outbox.recent_rates(session, since=now - timedelta(days=7))
        if sent >= self.settings.breaker_min_sample and complaints / sent > self.settings.max_complaint_rate:
            raise CircuitOpen(
                f"paused: {complaints} spam complaints for {sent} emails sent in the last 7 days "
                f"({complaints / sent:.2%}, limit {self.settings.max_complaint_rate:.2%}); "
                "review the content and the audience before sending more"
            )

    def _claim(self, now: datetime, size: int, key_prefix: str | None) -> tuple[list[Claim] | None, int]:
        """The next batch (None when nothing is due any more) and how many rows were suppressed."""
        with transaction(self.sessions) as session:
            claims, suppressed = outbox.claim_batch(
                session, worker=self.worker, now=now, limit=size, lease=self.settings.lease,
                resend_unknown=self.settings.resend_unknown, key_prefix=key_prefix,
            )
        return (None if not claims and not suppressed else claims), suppressed

    def _send_chunk(self, chunk: list[Claim], now: datetime) -> tuple[list[Outcome], int]:
        with transaction(self.sessions) as session:
            wanted = outbox.still_wanted(session, chunk)
            unwanted = [c.id for c in chunk if c.id not in wanted]
            outbox.suppress_unwanted(session, unwanted)
        outcomes: list[Outcome] = []
        try:
            for claim in chunk:
                if claim.id in wanted:
                    self.pacer.wait()
                    outcomes.append(self._deliver(claim, now))
        except Unreachable as exc:
            raise TransportDown(str(exc)) from None
        finally:
            # Record what did happen even when the server went away halfway through the chunk.
            if outcomes:
                with transaction(self.sessions) as session:
                    outbox.record_outcomes(session, outcomes, now=now)
                    for outcome in outcomes:
                        if outcome.bounced:
                            claim = outcome.claim
                            subscribers.mark_status(session, claim.subscriber_id, Status.bounced, now)
                            outbox.record_event(session, "bounced", now, subscriber_id=claim.subscriber_id,
                                                outbox_id=claim.id, detail=outcome.reply)
        return outcomes, len(unwanted)

    def _deliver(self, claim: Claim, now: datetime) -> Outcome:
        try:
            data = self.build(claim, now)
        except Exception as exc:  # noqa: BLE001 - a broken template must not stop the batch
            # Kept for a later attempt, not failed: once the template is fixed the message goes.
            log.error("cannot build outbox row %s (%s): %s", claim.id, claim.template, exc)
            state = OutboxState.retry if claim.attempts < self.settings.max_attempts else OutboxState.failed
            return Outcome(claim, state, f"render error: {exc}", now + retry_delay(claim.attempts))
        recipient = self.settings.dev_recipient or claim.email
        try:
            reply = self.transport.send(self.settings.envelope_sender, recipient, data)
        except NoReply as exc:
            log.warning("no reply after DATA for outbox row %s: %s", claim.id, exc)
            return Outcome(claim, OutboxState.unknown, str(exc), now + UNKNOWN_RESEND_AFTER)
        return self.classify(claim, reply, now)

    def content(self, claim: Claim, now: datetime) -> tuple[Rendered, dict[str, str]]:
        """The rendered email for this outbox row, before tracking, and its per-recipient values."""
        if claim.key.startswith("sys:confirm:"):
            round_ = int(claim.key.rsplit(":", 1)[1])
            recipient = {"confirm_url": self.links.confirm(claim.subscriber_id, round_, now)}
        else:
            unsubscribe_url = self.links.unsubscribe(claim.subscriber_id)
            recipient = {
                "first_name": claim.first_name or "",
                "unsubscribe_url": unsubscribe_url,
                "preferences_url": self.links.preferences(unsubscribe_url),
            }
        return self.renderer.render(claim.template, recipient), recipient

    def build(self, claim: Claim, now: datetime) -> bytes:
        """The exact bytes of this outbox row's message (the same Message-ID on every attempt)."""
        rendered, recipient = self.content(claim, now)
        is_marketing = "unsubscribe_url" in recipient
        if is_marketing and self.tracker is not None:
            # Never tracked: the confirmation (no consent yet) and the unsubscribe links.
            untracked = frozenset((recipient["unsubscribe_url"], recipient["preferences_url"]))
            html = self.tracker.rewrite(rendered.html, claim.id, untracked=untracked, track_opens=claim.track_opens)
            rendered = replace(rendered, html=html)
        return build_message(
            rendered,
            from_header=self.settings.from_header,
            to=claim.email,
            message_id=message_id(claim.id, claim.key, secret=self.settings.secret, domain=self.settings.domain),
            date=now,
            unsubscribe_url=recipient["unsubscribe_url"] if is_marketing else None,
            list_id=self.settings.list_id if is_marketing else None,
            dkim=self.settings.dkim,
        )

    def classify(self, claim: Claim, reply: Reply, now: datetime) -> Outcome:
        """2xx sent; 4xx retry with backoff until max attempts; 5xx failed (5.1.x, 5.2.1: bounced)."""
        if 200 <= reply.code < 300:
            return Outcome(claim, OutboxState.sent, str(reply))
        if 400 <= reply.code < 500 and claim.attempts < self.settings.max_attempts:
            return Outcome(claim, OutboxState.retry, str(reply), now + retry_delay(claim.attempts))
        bounced = reply.code >= 500 and bool(_BOUNCE_STATUS.search(reply.text))
        return Outcome(claim, OutboxState.failed, str(reply), bounced=bounced)


def retry_delay(attempts: int, rng: random.Random = random.Random()) -> timedelta:
    """Exponential backoff with +-20% jitter, so a server's backlog is not hit all at once."""
    base = RETRY_BASE * RETRY_FACTOR ** (attempts - 1)
    return base * rng.uniform(0.8, 1.2)


def utcnow() -> datetime:
    """The clock, read only by entry points."""
    return datetime.now(timezone.utc)
