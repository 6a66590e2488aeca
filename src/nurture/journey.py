"""When each subscriber gets their next sequence step: pure rules, and the planner that applies them.

The rules (time is passed in; local times come from zoneinfo, everything is stored in UTC):
- A subscriber enters the sequence when they confirm. A step with delay 0 is due at once.
- A step with delay d is due on the subscriber's local day (confirmation day + d), from the start
  of the send window (default 09:00 local) until its end (17:00).
- At most one marketing email (sequence or newsletter) per subscriber per local day, so after
  downtime the sequence catches up one step a day, in order.
- Progress is the set of step keys the subscriber has an outbox row for. The next step is the
  first one placed after the furthest step they have had: a step inserted before that point is
  skipped for them, a removed step is never sent, and a re-ordered sequence sends nothing twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nurture import outbox
from nurture.models import OutboxMessage, Status, Subscriber
from nurture.sequences import Sequence, Step, TemplateFormatError, load_sequences

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """The local send window, in minutes since midnight: [start, end)."""

    start: int = 9 * 60
    end: int = 17 * 60

    def opens(self, day: date, zone: ZoneInfo) -> datetime:
        """The UTC instant the window opens on local ``day``."""
        local = datetime.combine(day, time(self.start // 60, self.start % 60), tzinfo=zone)
        return local.astimezone(timezone.utc)

    def contains(self, instant: datetime, zone: ZoneInfo) -> bool:
        local = instant.astimezone(zone)
        minute = local.hour * 60 + local.minute
        return self.start <= minute < self.end

    def next_open(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """``instant`` itself if the window is open then, else the next opening."""
        if self.contains(instant, zone):
            return instant
        local_day = instant.astimezone(zone).date()
        today = self.opens(local_day, zone)
        return today if instant < today else self.opens(local_day + timedelta(days=1), zone)


def key_of(step: Step) -> str:
    return f"seq:{step.sequence}:{step.key}"


def next_step(sequence: Sequence, done_keys: set[str]) -> Step | None:
    """The first step placed after the furthest step this subscriber has had."""
    furthest = max((s.position for s in sequence.steps if key_of(s) in done_keys), default=-1)
    return next((s for s in sequence.steps if s.position > furthest), None)


def earliest_send(
    step: Step, *, confirmed_at: datetime, zone: ZoneInfo, last_marketing_at: datetime | None, window: Window
) -> datetime:
    """The first instant ``step`` may go, ignoring the window's closing time."""
    if step.delay_days == 0 and last_marketing_at is None:
        candidate = confirmed_at
    else:
        day = confirmed_at.astimezone(zone).date() + timedelta(days=step.delay_days)
        candidate = window.opens(day, zone)
    if last_marketing_at is not None:
        next_day = last_marketing_at.astimezone(zone).date() + timedelta(days=1)
        candidate = max(candidate, window.opens(next_day, zone))
    return candidate


def next_send(
    sequence: Sequence,
    *,
    confirmed_at: datetime,
    zone: ZoneInfo,
    done_keys: set[str],
    last_marketing_at: datetime | None,
    now: datetime,
    window: Window,
) -> tuple[Step, datetime] | None:
    """The subscriber's next step and when it will go (``now`` or later); None when finished."""
    step = next_step(sequence, done_keys)
    if step is None:
        return None
    at = earliest_send(step, confirmed_at=confirmed_at, zone=zone, last_marketing_at=last_marketing_at,
                       window=window)
    immediate = step.delay_days == 0 and last_marketing_at is None
    at = max(at, now)
    return step, (at if immediate else window.next_open(at, zone))


@dataclass
class Planner:
    """Queues the sequence steps that are due now. Called at the start of every sending pass."""

    templates_dir: Path
    sequence_name: str
    window: Window

    @classmethod
    def from_settings(cls, settings) -> Planner:
        start, end = settings.send_window_hours
        return cls(Path(settings.templates_dir), settings.sequence, Window(start, end))

    def sequence(self) -> Sequence | None:
        # Read on every pass, so an edit marketing saved is used by the next run without a restart.
        return load_sequences(self.templates_dir).get(self.sequence_name)

    def __call__(self, session: Session, now: datetime) -> int:
        try:
            sequence = self.sequence()
        except TemplateFormatError as exc:
            # A mistake in a template holds back new sequence steps only; confirmations, retries
            # and broadcasts already queued still go. `nurture templates validate` shows the fix.
            log.error("sequence %r not planned this pass: %s", self.sequence_name, exc)
            return 0
        if sequence is None or not sequence.steps:
            return 0
        people = session.execute(
            select(Subscriber.id, Subscriber.confirmed_at, Subscriber.timezone).where(
                Subscriber.status == Status.confirmed,
                Subscriber.wants_series.is_(True),
                Subscriber.sequence == sequence.name,
                Subscriber.confirmed_at <= now,
            )
        ).all()
        if not people:
            return 0
        done, last_marketing = self._history(session)
        rows = []
        for sid, confirmed_at, zone_name in people:
            found = next_send(
                sequence, confirmed_at=confirmed_at, zone=ZoneInfo(zone_name), done_keys=done.get(sid, set()),
                last_marketing_at=last_marketing.get(sid), now=now, window=self.window,
            )
            if found is not None and found[1] <= now:
                step = found[0]
                rows.append(dict(subscriber_id=sid, key=key_of(step), template=step.template, due_at=now,
                                 track_opens=step.track_opens))
        outbox.enqueue_many(session, rows, now=now)
        return len(rows)

    @staticmethod
    def _history(session: Session) -> tuple[dict[int, set[str]], dict[int, datetime]]:
        """Per subscriber: the sequence keys they have rows for, and their latest marketing email."""
        done: dict[int, set[str]] = defaultdict(set)
        last: dict[int, datetime] = {}
        marketing = or_(OutboxMessage.key.startswith("seq:"), OutboxMessage.key.startswith("bcast:"))
        when = func.coalesce(OutboxMessage.sent_at, OutboxMessage.due_at)
        for sid, key, at, state in session.execute(
            select(OutboxMessage.subscriber_id, OutboxMessage.key, when, OutboxMessage.state).where(marketing)
        ):
            if key.startswith("seq:"):
                done[sid].add(key)
            if state.value in ("sent", "sending", "queued", "retry", "unknown") and (sid not in last or at > last[sid]):
                last[sid] = at
        return done, last
