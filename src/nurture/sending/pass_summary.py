"""What a sending pass reports: its summary, or the one reason it stopped early."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from nurture.message_key import Kind, kind_of
from nurture.models import OutboxState
from nurture.sending.outbox import Outcome

# What a pass counts per stream (PassSummary.streams), for the pass records behind /metrics.
COUNTED = ("sent", "retried", "failed", "bounced", "unknown")
# The stream of each kind of message (as :class:`nurture.sending.messages.Streams` sends them).
STREAM_OF_KIND = {Kind.SEQUENCE_STEP: "sequence", Kind.BROADCAST: "newsletter", Kind.CONFIRMATION: "transactional"}


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
    # The same counts per stream: {"sequence": {"sent": 3, ...}, ...} (names in COUNTED).
    streams: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.content_error:
            self.broken.setdefault(outcome.claim.template, outcome.reply or "")
        counted = {OutboxState.sent: "sent", OutboxState.retry: "retried",
                   OutboxState.unknown: "unknown"}.get(outcome.state, "failed")
        setattr(self, counted, getattr(self, counted) + 1)
        stream = self.streams.setdefault(STREAM_OF_KIND.get(kind_of(outcome.claim.key), "transactional"), {})
        stream[counted] = stream.get(counted, 0) + 1
        if counted == "failed" and outcome.bounced:
            self.bounced += 1
            stream["bounced"] = stream.get("bounced", 0) + 1

    @property
    def attempted(self) -> int:
        """Messages handed to the transport or failed on the way (not suppressed)."""
        return self.sent + self.failed + self.retried + self.unknown

    def include(self, other: PassSummary) -> None:
        """Add another process's summary of the same pass to this one."""
        for count in fields(self):
            if count.name not in ("broken", "streams"):
                setattr(self, count.name, getattr(self, count.name) + getattr(other, count.name))
        for template, reason in other.broken.items():
            self.broken.setdefault(template, reason)
        for name, counts in other.streams.items():
            stream = self.streams.setdefault(name, {})
            for counted, n in counts.items():
                stream[counted] = stream.get(counted, 0) + n

    def line(self) -> str:
        return (f"sent {self.sent}, retried {self.retried}, failed {self.failed} "
                f"(bounced {self.bounced}), suppressed {self.suppressed}, unknown {self.unknown}")
