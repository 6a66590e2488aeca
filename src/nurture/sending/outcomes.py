"""What happened to one message, as an :class:`~nurture.outbox.Outcome`: the meaning of the
server's reply, and when a message that failed is tried again (backoff) or given up."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from nurture.models import OutboxState
from nurture.sending.outbox import Claim, Outcome
from nurture.sending.transports import Reply

RETRY_BASE = timedelta(minutes=15)
RETRY_FACTOR = 3  # 15 min, 45 min, 2 h 15, 6 h 45, 20 h: six attempts span about a day
UNKNOWN_RESEND_AFTER = timedelta(minutes=10)
RENDER_RETRY = timedelta(minutes=15)  # a message whose template cannot be rendered: tried again at this pace
_BOUNCE_STATUS = re.compile(r"\b5\.(1\.\d{1,3}|2\.1)\b")


@dataclass(frozen=True)
class Backoff:
    """Failed messages are tried again with growing pauses until ``max_attempts``, then failed.
    The jitter comes from the sender's own generator (seeded in tests)."""

    max_attempts: int
    rng: random.Random

    def failure(self, claim: Claim, reason: str, now: datetime) -> Outcome:
        """Retried with the usual backoff until the attempts run out, then failed."""
        if claim.attempts < self.max_attempts:
            return Outcome(claim, OutboxState.retry, reason, now + retry_delay(claim.attempts, self.rng))
        return Outcome(claim, OutboxState.failed, reason)

    def classify(self, claim: Claim, reply: Reply, now: datetime) -> Outcome:
        """2xx sent; 4xx retry with backoff until max attempts; 5xx failed (5.1.x, 5.2.1: bounced)."""
        if 200 <= reply.code < 300:
            return Outcome(claim, OutboxState.sent, str(reply))
        if 400 <= reply.code < 500:
            return self.failure(claim, str(reply), now)
        bounced = reply.code >= 500 and bool(_BOUNCE_STATUS.search(reply.text))
        return Outcome(claim, OutboxState.failed, str(reply), bounced=bounced)


def held_for_content(claim: Claim, reason: str, now: datetime) -> Outcome:
    """A message whose template cannot be rendered: the template's fault, not the message's. Held,
    never given up, and not counted as an attempt, so a template broken over a weekend loses
    nobody's email, and once it is fixed the message goes within RENDER_RETRY."""
    return Outcome(claim, OutboxState.retry, reason, now + RENDER_RETRY, content_error=True)


def no_reply(claim: Claim, reason: str, now: datetime) -> Outcome:
    """The data went out but no reply came: it may have arrived; resent (same Message-ID) later."""
    return Outcome(claim, OutboxState.unknown, reason, now + UNKNOWN_RESEND_AFTER)


def retry_delay(attempts: int, rng: random.Random) -> timedelta:
    """Exponential backoff with +-20% jitter, so a server's backlog is not hit all at once."""
    base = RETRY_BASE * RETRY_FACTOR ** (attempts - 1)
    return base * rng.uniform(0.8, 1.2)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and first line, for logs and the outbox row."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
