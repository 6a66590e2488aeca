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
- A step with a condition (``skip_if``/``only_if``, see content/sequences.py) is decided when it
  falls due, from the person's recorded clicks (sending/step_conditions.py). A skipped step is
  recorded (a row never sent) and the next step is planned as if it were not there: it uses up no
  day. Since the decision is taken at the step's own due instant, which a click does not move,
  a click needs no change to the stored instants below.

A pass costs what is due, not the size of the list: each subscriber row keeps ``next_due_at``,
an instant no later than their next step can go (indexed with status and wants_series). A pass
plans only people whose instant has come, applies the rules above to them exactly as before, and
stores their next instant. Anything that can bring a step earlier resets the instant to
``UNPLANNED`` (a confirmation, a failed marketing email, a cancelled newsletter, an edit of the
sequence or of the send window), so the next pass looks at that person again; anything that can
only delay a step needs nothing, since a person looked at too early is simply given a later time.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from nurture.content.sequences import Sequence, Step, TemplateFormatError, load_sequences
from nurture.db import insert_or_not
from nurture.message_key import BROADCAST_PREFIX, MARKETING_PREFIXES, SEQUENCE_PREFIX, MessageKey
from nurture.models import NEVER, UNPLANNED, Goal, OutboxMessage, PlannerState, Status, Subscriber
from nurture.sending import outbox
from nurture.sending.step_conditions import Behaviour, load_behaviour, record_skips, skip_reason

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
    """The outbox key of a sequence step."""
    return str(MessageKey.sequence_step(step.sequence, step.key))


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


def upcoming_sends(
    sequence: Sequence,
    *,
    confirmed_at: datetime,
    zone: ZoneInfo,
    done_keys: set[str],
    last_marketing_at: datetime | None,
    now: datetime,
    window: Window,
) -> list[tuple[Step, datetime]]:
    """Every step this subscriber has still to get, and when each will go, if nothing else happens
    meanwhile (no newsletter, no opt-out): :func:`next_send` asked at ``now``, then again the
    moment each step goes, with that step done and that instant as their latest marketing email,
    which is what a pass records."""
    found: list[tuple[Step, datetime]] = []
    done = set(done_keys)
    while (step_at := next_send(sequence, confirmed_at=confirmed_at, zone=zone, done_keys=done,
                                last_marketing_at=last_marketing_at, now=now, window=window)) is not None:
        found.append(step_at)
        done.add(key_of(step_at[0]))
        last_marketing_at = now = step_at[1]
    return found


@dataclass
class Planner:
    """Queues the sequence steps that are due now. Called at the start of every sending pass."""

    templates_dir: Path
    sequence_name: str
    window: Window
    consultation_url: str = ""  # what ``skip_if: clicked:consultation`` looks for in the recorded clicks

    @classmethod
    def from_settings(cls, settings) -> Planner:
        start, end = settings.send_window_hours
        return cls(Path(settings.templates_dir), settings.sequence, Window(start, end), settings.consultation_url)

    def sequence(self) -> Sequence | None:
        # Read on every pass, so an edit marketing saved is used by the next run without a restart.
        return load_sequences(self.templates_dir).get(self.sequence_name)

    def __call__(self, session: Session, now: datetime) -> int:
        """Queue every step due at ``now``, in this one transaction; returns how many."""
        planned, more = 0, True
        while more:
            count, more = self.plan_some(session, now)
            planned += count
        return planned

    def plan_some(self, session: Session, now: datetime) -> tuple[int, bool]:
        """Queue the steps due at ``now`` for one page of people; returns how many, and whether
        more people may be due. The sender gives each page its own short transaction, so even
        planning everyone again (after an edit) never holds the database's write lock for long."""
        try:
            sequence = self.sequence()
        except (TemplateFormatError, OSError) as exc:
            # A mistake in a template holds back new sequence steps only; confirmations, retries
            # and broadcasts already queued still go. `nurture templates validate` shows the fix.
            log.error("sequence %r not planned this pass: %s", self.sequence_name, exc)
            return 0, False
        if sequence is None or not sequence.steps:
            return 0, False
        self._replan_after_edits(session, sequence)
        # The people whose next instant has come. Each gets a later instant in _plan_page, so the
        # next query finds the next page, and memory stays flat whatever the size of the list.
        people = session.execute(
            select(Subscriber.id, Subscriber.confirmed_at, Subscriber.timezone)
            .where(
                Subscriber.status == Status.confirmed,
                Subscriber.wants_series.is_(True),
                Subscriber.next_due_at <= now,
                Subscriber.confirmed_at <= now,
            )
            .limit(PLAN_PAGE)
        ).all()
        if not people:
            return 0, False
        return self._plan_page(session, sequence, people, now), len(people) == PLAN_PAGE

    def _plan_page(self, session: Session, sequence: Sequence, people, now: datetime) -> int:
        ids = [sid for sid, _, _ in people]
        history = marketing_history(session, now, ids=ids)
        # A person who booked a consultation has reached the sequence's goal: nothing more is
        # planned for them, however they came to be planned again (people.goals ends it).
        booked = set(session.scalars(select(Goal.subscriber_id).where(Goal.subscriber_id.in_(ids))))
        # What people did (and agreed to) matters only to steps with a condition; a sequence without
        # one costs nothing more.
        behaviour = load_behaviour(session, ids, now) if any(s.conditions for s in sequence.steps) else {}
        rows, skips, next_due = [], [], []
        for sid, confirmed_at, zone_name in people:
            if sid in booked:
                next_due.append({"sid": sid, "due": NEVER})
                continue
            queued, skipped, found = self._plan_person(sequence, sid, confirmed_at, ZoneInfo(zone_name), history,
                                                       behaviour.get(sid), now)
            rows.extend(queued)
            skips.extend(skipped)
            due = NEVER if found is None else found[1]
            # Later than now, always: a pass must never find the same person twice.
            next_due.append({"sid": sid, "due": max(due, now + timedelta(microseconds=1))})
        record_skips(session, skips, now=now)
        outbox.enqueue_many(session, rows, now=now)
        table = Subscriber.__table__
        session.execute(update(table).where(table.c.id == bindparam("sid")).values(next_due_at=bindparam("due")),
                        next_due)
        return len(rows)

    def _plan_person(self, sequence: Sequence, sid: int, confirmed_at: datetime, zone: ZoneInfo,
                     history: MarketingHistory, behaviour: Behaviour | None, now: datetime):
        """One person at ``now``: the step to queue (at most one), the steps skipped by their
        condition (each planned as if it were not there, so it uses up no day), and the next
        step with its time (None when the sequence is finished)."""
        done = set(history.done.get(sid, ()))
        last = history.last.get(sid)
        queued: list[dict] = []
        skipped: list[dict] = []
        while True:
            found = next_send(sequence, confirmed_at=confirmed_at, zone=zone, done_keys=done,
                              last_marketing_at=last, now=now, window=self.window)
            if found is None or found[1] > now or queued:
                return queued, skipped, found
            step = found[0]
            reason = skip_reason(step, behaviour or Behaviour(), consultation_url=self.consultation_url) \
                if step.conditions else None
            if reason is not None:
                skipped.append(dict(subscriber_id=sid, key=key_of(step), template=step.template, reason=reason))
            elif now.astimezone(zone).date() in {at.astimezone(zone).date() for at in history.upcoming.get(sid, ())}:
                # A newsletter goes to them later today: the sequence step waits a day.
                return queued, skipped, (step, self.window.opens(now.astimezone(zone).date() + timedelta(days=1), zone))
            else:
                queued.append(dict(subscriber_id=sid, key=key_of(step), template=step.template, due_at=now,
                                   track_opens=step.track_opens))
                last = now
            done.add(key_of(step))

    def fingerprint(self, sequence: Sequence) -> str:
        """What the stored instants were computed from: the steps (key, place, delay) and the window."""
        parts = [f"{s.key}:{s.position}:{s.delay_days}" for s in sequence.steps]
        parts.append(f"window:{self.window.start}-{self.window.end}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _replan_after_edits(self, session: Session, sequence: Sequence) -> None:
        """After marketing adds, removes or re-orders steps, changes a delay, or the window
        changes, every stored instant may be too late: look at everyone once more."""
        fingerprint = self.fingerprint(sequence)
        stored = session.scalar(select(PlannerState.fingerprint).where(PlannerState.sequence == self.sequence_name))
        if stored == fingerprint:
            return
        # Two senders may notice the change at once: both store it (an upsert) and both replan,
        # which is harmless.
        session.execute(insert_or_not(session, PlannerState).values(sequence=self.sequence_name, fingerprint=fingerprint)
                        .on_conflict_do_update(index_elements=["sequence"], set_={"fingerprint": fingerprint}))
        replan_everyone(session)
        log.info("sequence %r or the send window changed: everyone's next step is computed again",
                 self.sequence_name)


def replan_everyone(session: Session) -> None:
    session.execute(update(Subscriber).where(Subscriber.status == Status.confirmed).values(next_due_at=UNPLANNED))


@dataclass
class MarketingHistory:
    """Per subscriber: sequence keys they have rows for, their latest marketing email up to now,
    and the newsletter sends queued for later."""

    done: dict[int, set[str]]
    last: dict[int, datetime]
    upcoming: dict[int, list[datetime]]


_ACTIVE = ("sent", "sending", "queued", "retry", "unknown")


def marketing_history(
    session: Session, now: datetime, *, ids: list[int] | None = None
) -> MarketingHistory:
    """One query over the marketing rows (sequence and newsletter) of everyone, or of the
    subscribers in ``ids``."""
    history = MarketingHistory(defaultdict(set), {}, defaultdict(list))
    marketing = or_(*(OutboxMessage.key.startswith(prefix) for prefix in MARKETING_PREFIXES))
    query = select(OutboxMessage.subscriber_id, OutboxMessage.key,
                   func.coalesce(OutboxMessage.sent_at, OutboxMessage.due_at), OutboxMessage.state).where(marketing)
    if ids is not None:
        query = query.where(OutboxMessage.subscriber_id.in_(ids))
    for sid, key, at, state in session.execute(query):
        if key.startswith(SEQUENCE_PREFIX):
            history.done[sid].add(key)
        if state.value not in _ACTIVE:
            continue
        if at <= now:
            if sid not in history.last or at > history.last[sid]:
                history.last[sid] = at
        elif key.startswith(BROADCAST_PREFIX):
            history.upcoming[sid].append(at)
    return history


def people_due(session: Session, now: datetime, *, at_most: int) -> int:
    """People whose stored next instant has come (an index range), counted up to ``at_most``."""
    due = (select(Subscriber.id)
           .where(Subscriber.status == Status.confirmed, Subscriber.wants_series.is_(True),
                  Subscriber.next_due_at <= now)
           .limit(at_most).subquery())
    return session.scalar(select(func.count()).select_from(due)) or 0
