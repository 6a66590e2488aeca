"""One sending pass: plan what is due, claim a batch, render, build, hand over, record.

Claims are short transactions; the transport is called outside any transaction. Messages of a
batch are sent in small chunks, each re-checked against the subscriber's current wishes just
before it goes (one query per chunk) and recorded just after (one transaction per chunk), so an
unsubscribe that commits mid-batch stops mail within one chunk, and a crash can only repeat the
messages of the chunk that was in flight.

Three rules keep one message or one fault from stopping or duplicating the others:
- whatever one message raises (render, build, sign, encode, send) is that message's outcome,
  recorded with its reason; only an unreachable server or database ends the pass;
- a lease is owned (:mod:`nurture.leases`): renewed by the real clock while the pass works, and a
  message goes only while its row is still ours;
- the outcomes of messages handed to the server are kept until written: a dropped database
  connection is retried on a fresh one, and if the database stays away the rows are left to
  their lease (never released), so the worst case is a resend with the same Message-ID.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TypeVar
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from nurture import journey, outbox, subscribers
from nurture.clock import utcnow
from nurture.db import DatabaseUnavailable, retrying, transaction
from nurture.leases import Leases
from nurture.links import Links
from nurture.message_key import SYSTEM_PREFIX
from nurture.compose import Draft, compose, outbox_draft, render
from nurture.messages import Dkim, Streams, sender_domain
from nurture.models import OutboxState, Status
from nurture.outbox import Claim, Outcome
from nurture.ratelimit import Pacer
from nurture.rendering import Rendered, RenderError, Renderer
from nurture.tracking import Tracker
from nurture.transports import NoReply, Reply, Transport, Undeliverable, Unreachable

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(minutes=15)
RETRY_FACTOR = 3  # 15 min, 45 min, 2 h 15, 6 h 45, 20 h: six attempts span about a day
UNKNOWN_RESEND_AFTER = timedelta(minutes=10)
RENDER_RETRY = timedelta(minutes=15)  # a message whose template cannot be rendered: tried again at this pace
RECHECK_AFTER = 1.0  # seconds: how stale the "still wanted?" answer may get before a send
_BOUNCE_STATUS = re.compile(r"\b5\.(1\.\d{1,3}|2\.1)\b")


class PassStopped(Exception):
    """A pass ended early for a reason that concerns every message, said in one line."""


class TransportDown(PassStopped):
    """The mail server could not be reached; nothing was marked sent, claims were released."""

    def __str__(self) -> str:
        return f"mail server unreachable, nothing was marked sent (run again later): {self.args[0]}"


class CircuitOpen(PassStopped):
    """Too many bounces in this run, or too many complaints lately: sending paused to protect the
    domain's reputation. Claims were released; nothing is lost."""


class DatabaseDown(PassStopped):
    """The database stayed unreachable during the pass. Claims not yet handed over are left to
    their lease; the message says what, if anything, may be sent twice."""


@dataclass
class PassSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0
    unknown: int = 0
    planned: int = 0
    # Templates that could not be rendered, with the reason: a content error, loud, not silent.
    broken: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.content_error:
            self.broken.setdefault(outcome.claim.template, outcome.reply or "")
        if outcome.state is OutboxState.sent:
            self.sent += 1
        elif outcome.state is OutboxState.retry:
            self.retried += 1
        elif outcome.state is OutboxState.unknown:
            self.unknown += 1
        else:
            self.failed += 1
            self.bounced += outcome.bounced

    def include(self, other: PassSummary) -> None:
        """Add another process's summary of the same pass to this one."""
        for count in fields(self):
            if count.name != "broken":
                setattr(self, count.name, getattr(self, count.name) + getattr(other, count.name))
        for template, reason in other.broken.items():
            self.broken.setdefault(template, reason)

    def line(self) -> str:
        return (f"sent {self.sent}, retried {self.retried}, failed {self.failed} "
                f"(bounced {self.bounced}), suppressed {self.suppressed}, unknown {self.unknown}")


@dataclass
class MailSettings:
    """What the sender needs to know, taken from Settings by the entry point."""

    from_header: str  # the marketing From; its domain names our Message-IDs
    streams: Streams  # sequence, newsletter, transactional: From, Return-Path, List-Id, Feedback-ID
    secret: str
    max_attempts: int = 6
    resend_unknown: bool = True
    dev_recipient: str | None = None
    dkim: Dkim | None = None
    batch_size: int = 200
    chunk_size: int = 20
    threads: int = 1
    # Keep it well above the longest single send (about 4 x the SMTP timeout): a message is only
    # handed over with at least half a lease left.
    lease: timedelta = outbox.DEFAULT_LEASE
    db_patience: timedelta = timedelta(seconds=60)  # how long a pass waits out a database outage
    max_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.003
    breaker_min_sample: int = 100  # rates over fewer messages say nothing

    @cached_property
    def domain(self) -> str:
        return sender_domain(self.from_header)


T = TypeVar("T")


@dataclass
class Sender:
    sessions: sessionmaker[Session]
    renderer: Renderer
    transport: Transport
    links: Links
    settings: MailSettings
    planner: journey.Planner | None = None
    tracker: Tracker | None = None
    pacer: Pacer = field(default_factory=Pacer)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    clock: Callable[[], datetime] = utcnow  # the real clock, for leases

    def run_pass(
        self,
        now: datetime,
        *,
        limit: int | None = None,
        key_prefix: str | None = None,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
        prepared: bool = False,
    ) -> PassSummary:
        """Send everything due at ``now`` (at most ``limit`` messages). Raises TransportDown,
        CircuitOpen or DatabaseDown, each with a one-line reason. ``prepared``: :meth:`prepare`
        was called for this pass already (by the process that spread it over several).

        Claiming runs ahead of sending: the connections always have about two chunks waiting,
        so none of them idles while the next batch is claimed."""
        summary = PassSummary()
        if not prepared:
            summary.planned = self.prepare(now, key_prefix)
        threads = max(1, self.settings.threads)
        leases = Leases(self.settings.lease, self.clock, self._renew)
        abort = threading.Event()
        lock = threading.Lock()

        def halted() -> bool:
            return abort.is_set() or (stop is not None and stop.is_set())

        def run(chunk: list[Claim]) -> None:
            if halted():
                return  # left claimed; released below
            outcomes, suppressed = self._send_chunk(chunk, now, leases, halted)
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
                        size = self._batch_size() if remaining is None else min(remaining, self._batch_size())
                        claims, suppressed = self._claim(now, size, key_prefix, leases)
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
                self._release(leases)
        return summary

    def prepare(self, now: datetime, key_prefix: str | None = None) -> int:
        """What a pass does once before sending, however many processes send it: queue the steps
        due at ``now`` and judge the complaint rate (raises CircuitOpen). Returns how many were queued."""
        planned = self._plan(now) if self.planner is not None and key_prefix is None else 0
        if key_prefix is None or not key_prefix.startswith(SYSTEM_PREFIX):
            self._check_complaints(now)
        return planned

    def due(self, now: datetime, at_most: int, *, people: bool = False) -> int:
        """How many messages a pass at ``now`` would claim, counted up to ``at_most``; with
        ``people``, before planning: also the people whose next sequence step has come."""
        def count() -> int:
            with self.sessions() as session:
                found = outbox.count_due(session, now=now, at_most=at_most)
                if people and self.planner is not None and found < at_most:
                    found += journey.people_due(session, now, at_most=at_most - found)
                return found
        return self._db("counting what is due", count)

    def _db(self, what: str, work: Callable[[], T], patience: float | None = None) -> T:
        """Database work that survives a dropped connection (tried again on a fresh one)."""
        wait_for = self.settings.db_patience.total_seconds() if patience is None else patience
        try:
            return retrying(work, what=what, patience=wait_for)
        except DatabaseUnavailable as exc:
            raise DatabaseDown(f"database unreachable while {exc}") from None

    def _plan(self, now: datetime) -> int:
        """Queue the steps due at ``now``, a page of people per transaction."""
        assert self.planner is not None

        def page() -> tuple[int, bool]:
            with transaction(self.sessions) as session:
                return self.planner.plan_some(session, now)
        planned, more = 0, True
        while more:
            count, more = self._db("planning what is due", page)
            planned += count
        return planned

    def _renew(self, until: datetime) -> set[int]:
        def renew() -> set[int]:
            with transaction(self.sessions) as session:
                return outbox.renew(session, worker=self.worker, until=until)
        return self._db("renewing this worker's leases", renew)

    def _release(self, leases: Leases) -> None:
        """Give back what was claimed but never handed over. What was handed over and not
        recorded stays leased: releasing it would resend it at once."""
        unsent = leases.unhanded()
        if not unsent:
            return

        def release() -> None:
            with transaction(self.sessions) as session:
                outbox.release(session, worker=self.worker, ids=unsent)
        try:
            self._db("releasing unsent claims", release)
        except DatabaseDown as exc:
            log.warning("%d unsent claims stay leased until their lease runs out (%s)", len(unsent), exc)

    def _batch_size(self) -> int:
        """No more than can be sent in a quarter of a lease at the configured rate, so a rate
        limit never leaves claimed rows waiting while another worker idles."""
        per_second = self.pacer.per_second
        if not per_second:
            return self.settings.batch_size
        affordable = int(per_second * self.settings.lease.total_seconds() / 4)
        return max(1, min(self.settings.batch_size, affordable))

    def _check_bounces(self, summary: PassSummary) -> None:
        attempted = summary.sent + summary.failed + summary.retried + summary.unknown
        if attempted >= self.settings.breaker_min_sample and summary.bounced / attempted > self.settings.max_bounce_rate:
            raise CircuitOpen(
                f"paused: {summary.bounced} of {attempted} messages in this run bounced "
                f"({summary.bounced / attempted:.1%}, limit {self.settings.max_bounce_rate:.1%}); "
                "check where these addresses came from, then run again"
            )

    def _check_complaints(self, now: datetime) -> None:
        """Complaints arrive later, by feedback loop: judge the last week, before sending anything.
        Without a complaint there is nothing to judge; with some, the sends are counted only as
        far as the verdict needs, so the check costs the same on any list size."""
        since = now - timedelta(days=7)
        limit = self.settings.max_complaint_rate

        def rates() -> tuple[int, int]:
            with self.sessions() as session:
                complaints = outbox.recent_complainers(session, since=since)
                if not complaints:
                    return 0, 0
                # Past this many sends the rate is under the limit whatever the true count.
                enough = max(self.settings.breaker_min_sample, math.ceil(complaints / limit) + 1)
                return complaints, outbox.recent_sent(session, since=since, at_most=enough)
        complaints, sent = self._db("reading the complaint rate", rates)
        if sent >= self.settings.breaker_min_sample and complaints / sent > limit:
            raise CircuitOpen(
                f"paused: {complaints} spam complaints for {sent} emails sent in the last 7 days "
                f"({complaints / sent:.2%}, limit {limit:.2%}); "
                "review the content and the audience before sending more"
            )

    def _claim(self, now: datetime, size: int, key_prefix: str | None,
               leases: Leases) -> tuple[list[Claim] | None, int]:
        """The next batch (None when nothing is due any more) and how many rows were suppressed."""
        def claim() -> tuple[list[Claim], int, datetime]:
            real_now = leases.now()
            with transaction(self.sessions) as session:
                claims, suppressed = outbox.claim_batch(
                    session, worker=self.worker, now=now, real_now=real_now, limit=size,
                    lease=self.settings.lease, resend_unknown=self.settings.resend_unknown, key_prefix=key_prefix,
                )
            return claims, suppressed, real_now + self.settings.lease
        claims, suppressed, until = self._db("claiming messages", claim)
        leases.claimed((c.id for c in claims), until)
        return (None if not claims and not suppressed else claims), suppressed

    def _send_chunk(self, chunk: list[Claim], now: datetime, leases: Leases,
                    halted: Callable[[], bool]) -> tuple[list[Outcome], int]:
        """Send one chunk. Who still wants their mail is checked before the chunk, and again
        for the rest of it whenever the last check is older than RECHECK_AFTER (a slow server):
        so a withdrawal stops mail within about a second, not within a chunk's duration."""
        suppressed = 0
        outcomes: list[Outcome] = []
        wanted: set[int] = set()
        checked_at = float("-inf")
        try:
            for index, claim in enumerate(chunk):
                if time.monotonic() - checked_at > RECHECK_AFTER:
                    wanted, unwanted = self._still_wanted(chunk[index:])
                    leases.done(unwanted)
                    suppressed += len(unwanted)
                    checked_at = time.monotonic()
                if claim.id not in wanted:
                    continue
                if halted():
                    break  # a stop was asked for: the rest is released, not sent
                self.pacer.wait()
                if not leases.still_ours(claim.id):
                    continue
                try:
                    outcomes.append(self._deliver(claim, now))
                except Unreachable:
                    leases.not_handed(claim.id)  # nothing went out: give it back with the rest
                    raise
        except Unreachable as exc:
            raise TransportDown(str(exc)) from None
        finally:
            # Record what did happen even when the server went away halfway through the chunk.
            if outcomes:
                outcomes = self._record(outcomes, now, leases)
        return outcomes, suppressed

    def _still_wanted(self, claims: list[Claim]) -> tuple[set[int], list[int]]:
        """Ids whose subscriber still wants them; the others are suppressed, never sent. A read,
        so it never queues for SQLite's write lock unless someone left."""
        def check() -> tuple[set[int], list[int]]:
            with self.sessions() as session:
                wanted = outbox.still_wanted(session, claims)
            unwanted = [c.id for c in claims if c.id not in wanted]
            if unwanted:
                with transaction(self.sessions) as session:
                    outbox.suppress_unwanted(session, unwanted)
            return wanted, unwanted
        return self._db("checking who still wants their mail", check)

    def _record(self, outcomes: list[Outcome], now: datetime, leases: Leases) -> list[Outcome]:
        """Write the outcomes of messages the server has (or may have), keeping them until the
        database takes them: as long as the rows stay leased to us, nobody resends them."""
        def write() -> list[Outcome]:
            with transaction(self.sessions) as session:
                written = outbox.record_outcomes(session, outcomes, now=now, worker=self.worker)
                # A marketing email that failed holds no day: the person's next step may go sooner.
                outbox.replan(session, (o.claim.subscriber_id for o in written
                                        if o.state is OutboxState.failed and not o.claim.key.startswith(SYSTEM_PREFIX)))
                for outcome in written:
                    if outcome.bounced:
                        claim = outcome.claim
                        subscribers.mark_status(session, claim.subscriber_id, Status.bounced, now)
                        outbox.record_event(session, "bounced", now, subscriber_id=claim.subscriber_id,
                                            outbox_id=claim.id, detail=outcome.reply)
            return written
        try:
            # Patience up to the lease: after it, another worker may take the rows over anyway.
            written = self._db(f"recording {len(outcomes)} messages already handed to the mail server", write,
                               patience=self.settings.lease.total_seconds())
        except DatabaseDown as exc:
            ids = sorted(o.claim.id for o in outcomes)
            raise DatabaseDown(
                f"{exc}; {len(ids)} messages (outbox ids {ids[0]}..{ids[-1]}) reached the mail server but are "
                f"not recorded: they stay leased for up to {self.settings.lease} and may then go once more, "
                "with the same Message-ID"
            ) from None
        leases.done(o.claim.id for o in outcomes)
        if len(written) < len(outcomes):
            log.warning("%d outcomes not recorded: another worker had taken those rows over",
                        len(outcomes) - len(written))
        return written

    def _deliver(self, claim: Claim, now: datetime) -> Outcome:
        """Hand one message over; whatever goes wrong with it is its own outcome. Only an
        unreachable server (Unreachable) ends the pass."""
        try:
            data = self.build(claim, now)
        except RenderError as exc:
            # The template's fault, not the message's: held, never given up, and not counted as an
            # attempt, so a template broken over a weekend loses nobody's email, and once it is
            # fixed the message goes within RENDER_RETRY. Said once per template by the pass's
            # summary (send-due, the scheduler, /admin).
            reason = f"render error: {one_line(exc)}"
            log.debug("cannot render outbox row %s (%s): %s", claim.id, claim.template, reason)
            return Outcome(claim, OutboxState.retry, reason, now + RENDER_RETRY, content_error=True)
        except Exception as exc:  # noqa: BLE001 - signing, a header, an address: this message's own fault
            log.warning("cannot build outbox row %s: %s", claim.id, one_line(exc))
            return self._failure(claim, f"build error: {one_line(exc)}", now)
        recipient = self.settings.dev_recipient or claim.email
        try:
            reply = self.transport.send(self.settings.streams.for_key(claim.key).return_path, recipient, data)
        except Unreachable:
            raise
        except NoReply as exc:
            log.warning("no reply after DATA for outbox row %s: %s", claim.id, exc)
            return Outcome(claim, OutboxState.unknown, str(exc), now + UNKNOWN_RESEND_AFTER)
        except Undeliverable as exc:
            log.warning("outbox row %s cannot be delivered: %s", claim.id, exc)
            return Outcome(claim, OutboxState.failed, f"undeliverable: {one_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - one message's fault is that message's outcome
            log.warning("sending outbox row %s failed: %s", claim.id, one_line(exc))
            return self._failure(claim, f"send error: {one_line(exc)}", now)
        return self.classify(claim, reply, now)

    def _failure(self, claim: Claim, reason: str, now: datetime) -> Outcome:
        """Retried with the usual backoff until the attempts run out, then failed."""
        if claim.attempts < self.settings.max_attempts:
            return Outcome(claim, OutboxState.retry, reason, now + retry_delay(claim.attempts))
        return Outcome(claim, OutboxState.failed, reason)

    def content(self, claim: Claim, now: datetime) -> tuple[Rendered, dict[str, str]]:
        """The rendered email for this outbox row, before tracking, and its per-recipient values."""
        draft = self._draft(claim, now)
        return render(draft, self.renderer), dict(draft.values)

    def build(self, claim: Claim, now: datetime) -> bytes:
        """The exact bytes of this outbox row's message (the same Message-ID on every attempt)."""
        return compose(self._draft(claim, now), renderer=self.renderer, stream=self.settings.streams.for_key(claim.key),
                       now=now, tracker=self.tracker, dkim=self.settings.dkim)

    def _draft(self, claim: Claim, now: datetime) -> Draft:
        return outbox_draft(claim, links=self.links, secret=self.settings.secret, domain=self.settings.domain, now=now)

    def classify(self, claim: Claim, reply: Reply, now: datetime) -> Outcome:
        """2xx sent; 4xx retry with backoff until max attempts; 5xx failed (5.1.x, 5.2.1: bounced)."""
        if 200 <= reply.code < 300:
            return Outcome(claim, OutboxState.sent, str(reply))
        if 400 <= reply.code < 500:
            return self._failure(claim, str(reply), now)
        bounced = reply.code >= 500 and bool(_BOUNCE_STATUS.search(reply.text))
        return Outcome(claim, OutboxState.failed, str(reply), bounced=bounced)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and first line, for logs and the outbox row."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def retry_delay(attempts: int, rng: random.Random = random.Random()) -> timedelta:
    """Exponential backoff with +-20% jitter, so a server's backlog is not hit all at once."""
    base = RETRY_BASE * RETRY_FACTOR ** (attempts - 1)
    return base * rng.uniform(0.8, 1.2)
