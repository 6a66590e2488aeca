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
PLAN_PAGE = 2000


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
        except (TemplateFormatError, OSError) as exc:
            # A mistake in a template holds back new sequence steps only; confirmations, retries
            # and broadcasts already queued still go. `nurture templates validate` shows the fix.
            log.error("sequence %r not planned this pass: %s", self.sequence_name, exc)
            return 0
        if sequence is None or not sequence.steps:
            return 0
        planned = 0
        after = 0
        while True:
            # A page of subscribers at a time, so memory stays flat however many there are.
            people = session.execute(
                select(Subscriber.id, Subscriber.confirmed_at, Subscriber.timezone)
                .where(
                    Subscriber.id > after,
                    Subscriber.status == Status.confirmed,
                    Subscriber.wants_series.is_(True),
                    Subscriber.confirmed_at <= now,
                )
                .order_by(Subscriber.id)
                .limit(PLAN_PAGE)
            ).all()
            if not people:
                return planned
            after = people[-1][0]
            planned += self._plan_page(session, sequence, people, now)

    def _plan_page(self, session: Session, sequence: Sequence, people, now: datetime) -> int:
        history = marketing_history(session, now, (people[0][0], people[-1][0]))
        rows = []
        for sid, confirmed_at, zone_name in people:
            zone = ZoneInfo(zone_name)
            found = next_send(
                sequence, confirmed_at=confirmed_at, zone=zone, done_keys=history.done.get(sid, set()),
                last_marketing_at=history.last.get(sid), now=now, window=self.window,
            )
            if found is None or found[1] > now:
                continue
            if now.astimezone(zone).date() in {at.astimezone(zone).date() for at in history.upcoming.get(sid, ())}:
                continue  # a newsletter goes to them later today: the sequence step waits a day
            step = found[0]
            rows.append(dict(subscriber_id=sid, key=key_of(step), template=step.template, due_at=now,
                             track_opens=step.track_opens))
        outbox.enqueue_many(session, rows, now=now)
        return len(rows)


@dataclass
class MarketingHistory:
    """Per subscriber: sequence keys they have rows for, their latest marketing email up to now,
    and the newsletter sends queued for later."""

    done: dict[int, set[str]]
    last: dict[int, datetime]
    upcoming: dict[int, list[datetime]]


_ACTIVE = ("sent", "sending", "queued", "retry", "unknown")


def marketing_history(
    session: Session, now: datetime, id_range: tuple[int, int] | None = None
) -> MarketingHistory:
    """One query over the marketing rows (sequence and newsletter) of everyone, or of the
    subscribers whose ids are in ``id_range`` (inclusive)."""
    history = MarketingHistory(defaultdict(set), {}, defaultdict(list))
    marketing = or_(OutboxMessage.key.startswith("seq:"), OutboxMessage.key.startswith("bcast:"))
    query = select(OutboxMessage.subscriber_id, OutboxMessage.key,
                   func.coalesce(OutboxMessage.sent_at, OutboxMessage.due_at), OutboxMessage.state).where(marketing)
    if id_range is not None:
        query = query.where(OutboxMessage.subscriber_id.between(*id_range))
    for sid, key, at, state in session.execute(query):
        if key.startswith("seq:"):
            history.done[sid].add(key)
        if state.value not in _ACTIVE:
            continue
        if at <= now:
            if sid not in history.last or at > history.last[sid]:
                history.last[sid] = at
        elif key.startswith("bcast:"):
            history.upcoming[sid].append(at)
    return history
