"""The sender's settings: its part of Settings, gathered by the runtime (nurture.runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from nurture.sending import outbox
from nurture.sending.messages import Dkim, Streams, sender_domain


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
