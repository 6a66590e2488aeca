"""Funnel figures for `nurture stats` and the /admin dashboard: pure queries, no HTTP, no clock.

What ``since`` means: the funnel follows a *cohort*, the people who signed up at or after
``since`` (everybody when it is None): how many confirmed, how many were sent each step, clicked,
unsubscribed after it, bounced, and reached the goal (clicked the consultation link). Newsletter
issues are not tied to a cohort: the broadcasts listed are those due at or after ``since``, with
all their recipients.

An unsubscribe carries no message id (the person may have used any link, or the List-Unsubscribe
header), so it is credited to the last marketing email (sequence step or broadcast) sent to that
person before they left: the one that most plausibly made them go.

Counting is done by the database with GROUP BY, a handful of queries whatever the list size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import Date, and_, case, cast, distinct, func, or_, select
from sqlalchemy.orm import Session

from nurture.models import Broadcast, Event, OutboxMessage, OutboxState, Subscriber
from nurture.sequences import Sequence

__all__ = [
    "BroadcastFigures", "Delivery", "Funnel", "Problems", "QueueCounts", "StepFigures", "Upcoming",
    "funnel", "problems", "queue_counts", "recent_deliveries", "signups_per_day", "upcoming",
]

_MARKETING = ("seq:", "bcast:")


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class _Rates:
    """Rates of an email's figures (None when nothing was sent)."""

    sent: int
    clickers: int
    unsubscribed: int

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clickers, self.sent)

    @property
    def unsubscribe_rate(self) -> float | None:
        return _rate(self.unsubscribed, self.sent)


@dataclass(frozen=True)
class StepFigures(_Rates):
    """One sequence step. ``clickers``, ``openers``, ``bounced``, ``unsubscribed`` and
    ``goal_clickers`` count people, not events (two clicks by one person are one clicker)."""

    key: str
    position: int
    subject: str
    sent: int = 0
    clickers: int = 0
    openers: int = 0
    unsubscribed: int = 0
    bounced: int = 0
    goal_clickers: int = 0  # clicked the consultation link in this email


@dataclass(frozen=True)
class BroadcastFigures(_Rates):
    id: int
    template: str
    audience: str
    status: str
    send_at: datetime
    recipients: int
    track_opens: bool
    sent: int = 0
    clickers: int = 0
    openers: int = 0
    unsubscribed: int = 0
    bounced: int = 0


@dataclass(frozen=True)
class Funnel:
    since: datetime | None
    sequence: str
    consultation_url: str
    signups: int
    confirmed: int
    goal: int  # people of the cohort who clicked the consultation link (from any email)
    steps: list[StepFigures] = field(default_factory=list)
    broadcasts: list[BroadcastFigures] = field(default_factory=list)

    @property
    def confirm_rate(self) -> float | None:
        return _rate(self.confirmed, self.signups)

    @property
    def goal_rate(self) -> float | None:
        """Goal clicks per confirmed subscriber: the share of the people in the series who asked."""
        return _rate(self.goal, self.confirmed)

    def to_dict(self) -> dict:
        """Plain JSON-ready data for ``nurture stats --json``: ISO dates, rates as fractions."""
        def rates(obj, names):
            return {f"{name}_rate": _round(getattr(obj, f"{name}_rate")) for name in names}

        return {
            "since": _iso(self.since),
            "sequence": self.sequence,
            "consultation_url": self.consultation_url,
            "signups": self.signups,
            "confirmed": self.confirmed,
            "confirm_rate": _round(self.confirm_rate),
            "goal": self.goal,
            "goal_rate": _round(self.goal_rate),
            "steps": [asdict(s) | rates(s, ("click", "unsubscribe")) for s in self.steps],
            "broadcasts": [asdict(b) | {"send_at": _iso(b.send_at)} | rates(b, ("click", "unsubscribe"))
                           for b in self.broadcasts],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def funnel(session: Session, *, since: datetime | None, sequence: Sequence, consultation_url: str) -> Funnel:
    """The funnel of the people who signed up since ``since`` (everybody if None), step by step in
    sequence order, with the goal and the broadcasts due since then."""
    in_cohort = Subscriber.created_at >= since if since is not None else None

    people = select(func.count(), func.count(Subscriber.confirmed_at)).select_from(Subscriber)
    if in_cohort is not None:
        people = people.where(in_cohort)
    signups, confirmed = session.execute(people).one()

    goal_click = and_(Event.kind == "clicked", _is_goal(consultation_url))
    goal_query = (
        select(func.count(distinct(func.coalesce(OutboxMessage.subscriber_id, Event.subscriber_id))))
        .select_from(Event)
        .outerjoin(OutboxMessage, OutboxMessage.id == Event.outbox_id)
        .join(Subscriber, Subscriber.id == func.coalesce(OutboxMessage.subscriber_id, Event.subscriber_id))
        .where(goal_click)
    )
    if in_cohort is not None:
        goal_query = goal_query.where(in_cohort)
    goal = session.scalar(goal_query) or 0

    issues = select(Broadcast).order_by(Broadcast.send_at.desc(), Broadcast.id.desc())
    if since is not None:
        issues = issues.where(Broadcast.send_at >= since)
    broadcasts = session.scalars(issues).all()

    step_keys = {f"seq:{sequence.name}:{step.key}": step for step in sequence.steps}
    issue_keys = {f"bcast:{b.id}": b for b in broadcasts}
    keys = [*step_keys, *issue_keys]
    per_key = _per_message(session, keys, in_cohort, goal_click) if keys else {}
    unsubscribed = _unsubscribes_by_key(session, keys, in_cohort) if keys else {}

    steps = [
        StepFigures(step.key, step.position, step.subject, **per_key.get(key, {}),
                    unsubscribed=unsubscribed.get(key, 0))
        for key, step in step_keys.items()
    ]
    figures = []
    for key, b in issue_keys.items():
        counts = {k: v for k, v in per_key.get(key, {}).items() if k != "goal_clickers"}
        figures.append(BroadcastFigures(b.id, b.template, b.audience, b.status, b.send_at, b.recipients,
                                        b.track_opens, **counts, unsubscribed=unsubscribed.get(key, 0)))
    return Funnel(since, sequence.name, consultation_url, signups, confirmed, goal, steps, figures)


def _is_goal(url: str):
    # The goal link as written, or with tracking parameters or a fragment added to it.
    return or_(Event.detail == url, Event.detail.startswith(url + "?", autoescape=True),
               Event.detail.startswith(url + "#", autoescape=True))


def _per_message(session: Session, keys: list[str], in_cohort, goal_click) -> dict[str, dict[str, int]]:
    """Sent, clickers, openers, bounced and goal clickers per message key, in one GROUP BY."""
    who = OutboxMessage.subscriber_id

    def people(condition):
        return func.count(distinct(case((condition, who))))

    query = (
        select(
            OutboxMessage.key,
            func.count(distinct(case((OutboxMessage.sent_at.is_not(None), OutboxMessage.id)))),
            people(Event.kind == "clicked"),
            people(Event.kind == "opened"),
            people(Event.kind == "bounced"),
            people(goal_click),
        )
        .select_from(OutboxMessage)
        .outerjoin(Event, and_(Event.outbox_id == OutboxMessage.id,
                               Event.kind.in_(("clicked", "opened", "bounced"))))
        .where(OutboxMessage.key.in_(keys))
        .group_by(OutboxMessage.key)
    )
    query = _cohort(query, in_cohort)
    return {
        key: dict(sent=sent, clickers=clickers, openers=openers, bounced=bounced, goal_clickers=goal)
        for key, sent, clickers, openers, bounced, goal in session.execute(query)
    }


def _unsubscribes_by_key(session: Session, keys: list[str], in_cohort) -> dict[str, int]:
    """People who unsubscribed, per the last marketing email sent to them before they did."""
    latest = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.subscriber_id == Event.subscriber_id,
            OutboxMessage.sent_at.is_not(None),
            OutboxMessage.sent_at <= Event.created_at,
            or_(*(OutboxMessage.key.startswith(prefix) for prefix in _MARKETING)),
        )
        .order_by(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc())
        .limit(1)
        .correlate(Event)
        .scalar_subquery()
    )
    credited = (
        select(Event.subscriber_id.label("subscriber_id"), latest.label("outbox_id"))
        .where(Event.kind == "unsubscribed", Event.subscriber_id.is_not(None))
        .subquery()
    )
    query = (
        select(OutboxMessage.key, func.count(distinct(credited.c.subscriber_id)))
        .select_from(credited)
        .join(OutboxMessage, OutboxMessage.id == credited.c.outbox_id)
        .where(OutboxMessage.key.in_(keys))
        .group_by(OutboxMessage.key)
    )
    return {key: count for key, count in session.execute(_cohort(query, in_cohort))}


def _cohort(query, in_cohort):
    """Sequence rows of people in the cohort only; broadcasts count all their recipients."""
    if in_cohort is None:
        return query
    return query.join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id).where(
        or_(OutboxMessage.key.startswith("bcast:"), in_cohort))


def signups_per_day(session: Session, *, days: int, now: datetime) -> list[tuple[date, int]]:
    """Signups on each of the last ``days`` UTC days up to ``now``'s, oldest first, zero-filled."""
    today = now.astimezone(timezone.utc).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=timezone.utc)
    if session.get_bind().dialect.name == "postgresql":
        day = cast(func.timezone("UTC", Subscriber.created_at), Date)
    else:
        day = func.date(Subscriber.created_at)  # stored as UTC text: 'YYYY-MM-DD HH:MM:SS...'
    rows = session.execute(
        select(day, func.count()).where(Subscriber.created_at >= start, Subscriber.created_at <= now).group_by(day)
    )
    counts = {(d if isinstance(d, date) else date.fromisoformat(d)): n for d, n in rows}
    return [(first + timedelta(days=i), counts.get(first + timedelta(days=i), 0)) for i in range(days)]


@dataclass(frozen=True)
class Delivery:
    at: datetime
    kind: str  # sent, failed, bounced
    email: str | None  # None once the subscriber's data was erased
    key: str | None  # None for a bounce that could not be matched to a message
    reply: str | None


def recent_deliveries(session: Session, limit: int = 20,
                      kinds: tuple[str, ...] = ("sent", "failed", "bounced")) -> list[Delivery]:
    """The latest sends, failures and bounces, newest first, with the server's reply."""
    rows = session.execute(
        select(Event.created_at, Event.kind, Subscriber.email, OutboxMessage.key, Event.detail)
        .outerjoin(OutboxMessage, OutboxMessage.id == Event.outbox_id)
        .outerjoin(Subscriber, Subscriber.id == func.coalesce(Event.subscriber_id, OutboxMessage.subscriber_id))
        .where(Event.kind.in_(kinds))
        .order_by(Event.created_at.desc(), Event.id.desc())
        .limit(limit)
    )
    return [Delivery(*row) for row in rows]


@dataclass(frozen=True)
class Upcoming:
    due_at: datetime
    email: str | None
    key: str
    state: str  # queued or retry
    attempts: int
    overdue: bool  # due before ``now``: the sender is behind or stopped
    last_error: str | None = None  # why the last attempt did not go (a retry)


def upcoming(session: Session, *, now: datetime, limit: int = 20) -> list[Upcoming]:
    """The next queued and retrying messages, soonest first."""
    rows = session.execute(
        select(OutboxMessage.due_at, Subscriber.email, OutboxMessage.key, OutboxMessage.state, OutboxMessage.attempts,
               OutboxMessage.last_error)
        .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
        .where(OutboxMessage.state.in_((OutboxState.queued, OutboxState.retry)))
        .order_by(OutboxMessage.due_at, OutboxMessage.id)
        .limit(limit)
    )
    return [Upcoming(due, email, key, state.value, attempts, due < now, error)
            for due, email, key, state, attempts, error in rows]


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    retry: int
    overdue: int  # of those, due before now


def queue_counts(session: Session, *, now: datetime) -> QueueCounts:
    """How much is waiting in the outbox, in one query."""
    waiting = OutboxMessage.state.in_((OutboxState.queued, OutboxState.retry))
    queued, retry, overdue = session.execute(
        select(
            func.count(case((OutboxMessage.state == OutboxState.queued, 1))),
            func.count(case((OutboxMessage.state == OutboxState.retry, 1))),
            func.count(case((OutboxMessage.due_at < now, 1))),
        ).where(waiting)
    ).one()
    return QueueCounts(queued, retry, overdue)


@dataclass(frozen=True)
class Problems:
    """Messages that did not go: waiting for another attempt, given up, or of unknown fate, and
    the latest reasons (render errors, refused addresses, missing SMTPUTF8...)."""

    retrying: int
    failed: int
    unknown: int
    latest: list[tuple[str, str]]  # (outbox key, reason), newest first

    def __bool__(self) -> bool:
        return bool(self.retrying or self.failed or self.unknown)


def problems(session: Session, *, limit: int = 3) -> Problems:
    """How many messages are in trouble, and why the latest of them are."""
    troubled = (OutboxState.retry, OutboxState.failed, OutboxState.unknown)
    counts = dict(session.execute(
        select(OutboxMessage.state, func.count()).where(OutboxMessage.state.in_(troubled))
        .group_by(OutboxMessage.state)
    ).all())
    latest = session.execute(
        select(OutboxMessage.key, OutboxMessage.last_error)
        .where(OutboxMessage.state.in_(troubled), OutboxMessage.last_error.is_not(None))
        .order_by(OutboxMessage.id.desc()).limit(limit)
    ).all()
    return Problems(counts.get(OutboxState.retry, 0), counts.get(OutboxState.failed, 0),
                    counts.get(OutboxState.unknown, 0), [(key, error) for key, error in latest])
