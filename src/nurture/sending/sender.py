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

The sender reaches storage only through its :class:`~nurture.send_store.SendStore`, so the
pass can be tested against the in-memory store (:mod:`nurture.memory_store`). Each store call
is tried again on a fresh connection while the database is unreachable (``_db``), for
``db_patience``, and recording what the server already has for a whole lease.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from nurture.clock import utcnow
from nurture.content.rendering import Rendered, Renderer, RenderError
from nurture.db import DatabaseUnavailable, retrying
from nurture.links import Links
from nurture.message_key import SYSTEM_PREFIX
from nurture.models import OutboxState
from nurture.sending.breaker import check_bounces, check_complaints, complaint_rate
from nurture.sending.compose import Draft, compose, outbox_draft, render
from nurture.sending.leases import Leases
from nurture.sending.mail_settings import MailSettings
from nurture.sending.outbox import Claim, Outcome
from nurture.sending.outcomes import Backoff, held_for_content, no_reply, one_line
from nurture.sending.pass_summary import DatabaseDown, PassSummary, TransportDown
from nurture.sending.ratelimit import Pacer
from nurture.sending.send_store import SendStore
from nurture.sending.sent_versions import SentVersions, TemplateVersion
from nurture.sending.tracked_links import Tracker
from nurture.sending.transports import NoReply, Reply, Transport, Undeliverable, Unreachable

log = logging.getLogger(__name__)

RECHECK_AFTER = 1.0  # seconds: how stale the "still wanted?" answer may get before a send

T = TypeVar("T")


@dataclass
class Sender:
    """Sends passes for one worker: its store, renderer, transport and settings, its own worker
    id (so one sender's release never touches another's claims) and retry jitter."""

    store: SendStore
    renderer: Renderer
    transport: Transport
    links: Links
    settings: MailSettings
    tracker: Tracker | None = None
    pacer: Pacer = field(default_factory=Pacer)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    clock: Callable[[], datetime] = utcnow  # the real clock, for leases
    rng: random.Random = field(default_factory=random.Random)  # the retry jitter's (seeded in tests)
    versions: SentVersions = field(default_factory=SentVersions)  # which version each message is built from

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
        # Kept whole (over 60 lines): the claim-ahead loop, the halt and the release in `finally`
        # are one piece of control flow, and splitting it would scatter who releases what.
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
                    check_bounces(summary, self.settings)
            finally:
                abort.set()
                wait(pending)
                self._release(leases)
                self.pacer.release()  # what is left of a shared sending budget's grant
        return summary

    def prepare(self, now: datetime, key_prefix: str | None = None) -> int:
        """What a pass does once before sending, however many processes send it: queue the steps
        due at ``now`` and judge the complaint rate (raises CircuitOpen). Returns how many were queued."""
        planned = self._plan(now) if key_prefix is None else 0
        if key_prefix is None or not key_prefix.startswith(SYSTEM_PREFIX):
            rates = self._db("reading the complaint rate", lambda: complaint_rate(self.store, now, self.settings))
            check_complaints(*rates, self.settings)
        return planned

    def due(self, now: datetime, at_most: int, *, people: bool = False) -> int:
        """How many messages a pass at ``now`` would claim, counted up to ``at_most``; with
        ``people``, before planning: also the people whose next sequence step has come."""
        return self._db("counting what is due", lambda: self.store.count_due(now, at_most=at_most, people=people))

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.settings.max_attempts, self.rng)

    def _db(self, what: str, work: Callable[[], T], patience: float | None = None) -> T:
        """Store work that survives a dropped connection (tried again on a fresh one)."""
        wait_for = self.settings.db_patience.total_seconds() if patience is None else patience
        try:
            return retrying(work, what=what, patience=wait_for)
        except DatabaseUnavailable as exc:
            raise DatabaseDown(f"database unreachable while {exc}") from None

    def _plan(self, now: datetime) -> int:
        """Queue the steps due at ``now``, a page of people per transaction."""
        planned, more = 0, True
        while more:
            count, more = self._db("planning what is due", lambda: self.store.plan_page(now))
            planned += count
        return planned

    def _renew(self, until: datetime) -> set[int]:
        return self._db("renewing this worker's leases", lambda: self.store.renew(worker=self.worker, until=until))

    def _release(self, leases: Leases) -> None:
        """Give back what was claimed but never handed over. What was handed over and not
        recorded stays leased: releasing it would resend it at once."""
        unsent = leases.unhanded()
        if not unsent:
            return
        try:
            self._db("releasing unsent claims", lambda: self.store.release(worker=self.worker, ids=unsent))
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

    def _claim(self, now: datetime, size: int, key_prefix: str | None,
               leases: Leases) -> tuple[list[Claim] | None, int]:
        """The next batch (None when nothing is due any more) and how many rows were suppressed."""
        def claim() -> tuple[list[Claim], int, datetime]:
            real_now = leases.now()
            claims, suppressed = self.store.claim(
                worker=self.worker, now=now, real_now=real_now, limit=size, lease=self.settings.lease,
                resend_unknown=self.settings.resend_unknown, key_prefix=key_prefix,
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
                self.pacer.wait(keep_alive=leases.keep)
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
        """Ids whose subscriber still wants them; the others are suppressed, never sent."""
        wanted = self._db("checking who still wants their mail", lambda: self.store.keep_wanted(claims))
        return wanted, [c.id for c in claims if c.id not in wanted]

    def _record(self, outcomes: list[Outcome], now: datetime, leases: Leases) -> list[Outcome]:
        """Write the outcomes of messages the server has (or may have), keeping them until the
        database takes them: as long as the rows stay leased to us, nobody resends them."""
        def write() -> list[Outcome]:
            return self.store.record(outcomes, now=now, worker=self.worker)
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
            # Held, not counted as an attempt (outcomes.held_for_content). Said once per template
            # by the pass's summary (send-due, the scheduler, /admin).
            reason = f"render error: {one_line(exc)}"
            log.debug("cannot render outbox row %s (%s): %s", claim.id, claim.template, reason)
            return held_for_content(claim, reason, now)
        except Exception as exc:  # noqa: BLE001 - signing, a header, an address: this message's own fault
            log.warning("cannot build outbox row %s: %s", claim.id, one_line(exc))
            return self._failure(claim, f"build error: {one_line(exc)}", now)
        version = self._version(claim)
        recipient = self.settings.dev_recipient or claim.email
        try:
            reply = self.transport.send(self.settings.streams.for_key(claim.key).return_path, recipient, data)
        except Unreachable:
            raise
        except NoReply as exc:
            log.warning("no reply after DATA for outbox row %s: %s", claim.id, exc)
            return no_reply(claim, str(exc), now)
        except Undeliverable as exc:
            log.warning("outbox row %s cannot be delivered: %s", claim.id, exc)
            # one_line would say "Undeliverable: " again after the label.
            return Outcome(claim, OutboxState.failed, f"undeliverable: {one_line(exc).removeprefix('Undeliverable: ')}")
        except Exception as exc:  # noqa: BLE001 - one message's fault is that message's outcome
            log.warning("sending outbox row %s failed: %s", claim.id, one_line(exc))
            return self._failure(claim, f"send error: {one_line(exc)}", now)
        return replace(self.classify(claim, reply, now), version=version)

    def _version(self, claim: Claim) -> TemplateVersion | None:
        """The version this message was just built from; None if its files cannot be read now
        (the message still goes: which version it was is a record, not a condition of sending)."""
        try:
            return self.versions.of(self.renderer, claim.template)
        except Exception as exc:  # noqa: BLE001 - a file removed since the render, a decode error
            log.warning("cannot tell which version of %s outbox row %s was built from: %s",
                        claim.template, claim.id, one_line(exc))
            return None

    def _failure(self, claim: Claim, reason: str, now: datetime) -> Outcome:
        """Retried with the usual backoff until the attempts run out, then failed."""
        return self.backoff.failure(claim, reason, now)

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
        return self.backoff.classify(claim, reply, now)
