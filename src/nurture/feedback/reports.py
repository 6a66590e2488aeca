"""The operator's figures for /admin and the CLI: signups per day, recent deliveries, what is
queued, what is in trouble and why, and templates whose messages wait because they cannot be
rendered. Pure queries, no HTTP, no clock (``now`` is passed in). The funnel of a cohort is
:mod:`nurture.funnel_figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from nurture.models import Event, OutboxMessage, OutboxState, Subscriber

__all__ = [
    "BrokenTemplate", "Delivery", "Problems", "QueueCounts", "Upcoming", "broken_templates", "problems",
    "queue_counts", "recent_deliveries", "shown_reason", "signups_per_day", "upcoming", "where_in_templates",
]


def signups_per_day(session: Session, *, days: int, now: datetime, zone: str = "UTC") -> list[tuple[date, int]]:
    """Signups on each of the last ``days`` local days (in ``zone``, the clinic's) up to ``now``'s,
    oldest first, zero-filled. The database counts per UTC hour; the hours are folded into local
    days here (at most 24 x ``days`` groups), which is exact for every zone whose offset is whole
    hours, as all US zones are (daylight saving time included)."""
    local_zone = ZoneInfo(zone)
    today = now.astimezone(local_zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=local_zone).astimezone(timezone.utc)
    if session.get_bind().dialect.name == "postgresql":
        hour = func.to_char(func.timezone("UTC", Subscriber.created_at), "YYYY-MM-DD HH24")
    else:
        hour = func.substr(Subscriber.created_at, 1, 13)  # stored as UTC text: 'YYYY-MM-DD HH:MM:SS...'
    rows = session.execute(
        select(hour, func.count()).where(Subscriber.created_at >= start, Subscriber.created_at <= now).group_by(hour)
    )
    counts: dict[date, int] = {}
    for text, n in rows:
        at = datetime.strptime(text[:13], "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
        day = at.astimezone(local_zone).date()
        counts[day] = counts.get(day, 0) + n
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


# The sender records a template that cannot be rendered as "render error: <ExceptionType>: path:line: message".
_RENDER_ERROR = "render error: "


def where_in_templates(reason: str, templates_dir: Path | str) -> str:
    """A render error as ``file:line: message`` with the file relative to the templates folder,
    the way an editor and the studio name it (the sender stores the absolute path)."""
    text = reason.removeprefix(_RENDER_ERROR)
    kind, sep, rest = text.partition(": ")
    if sep and kind.isidentifier() and kind.endswith("Error"):
        text = rest
    for base in (Path(templates_dir), Path(templates_dir).resolve()):
        prefix = f"{base}/"
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def shown_reason(text: str | None, templates_dir: Path | str) -> str:
    """An outbox row's last error or reply as people read it (explain, /admin): a render error
    names its file relative to the templates folder, not the server's path."""
    if text and text.startswith(_RENDER_ERROR):
        return _RENDER_ERROR + where_in_templates(text, templates_dir)
    return text or ""


@dataclass(frozen=True)
class BrokenTemplate:
    """A template whose messages wait because it could not be rendered at their last attempt."""

    template: str  # relative to the templates folder, as outbox rows name it
    where: str  # file:line: message, relative
    waiting: int  # messages held back (retrying)
    failed: int  # messages given up on
    next_attempt: datetime | None  # the soonest retry among the waiting ones


def broken_templates(session: Session, templates_dir: Path | str) -> list[BrokenTemplate]:
    """Templates whose messages did not go because they could not be rendered, from the outbox
    rows' last error: the same record the sender writes, so the dashboard says what the sender saw.
    A row sent after the fix is no longer counted, so the list empties by itself."""
    rows = session.execute(
        select(OutboxMessage.template, OutboxMessage.state, func.count(), func.max(OutboxMessage.id),
               func.min(OutboxMessage.due_at))
        .where(OutboxMessage.state.in_((OutboxState.retry, OutboxState.failed)),
               OutboxMessage.last_error.startswith(_RENDER_ERROR))
        .group_by(OutboxMessage.template, OutboxMessage.state)
    ).all()
    found: dict[str, dict] = {}
    for template, state, count, newest, due in rows:
        entry = found.setdefault(template, {"waiting": 0, "failed": 0, "newest": 0, "next": None})
        entry["newest"] = max(entry["newest"], newest)
        if state is OutboxState.retry:
            entry["waiting"] += count
            entry["next"] = due if entry["next"] is None else min(entry["next"], due)
        else:
            entry["failed"] += count
    errors = dict(session.execute(
        select(OutboxMessage.id, OutboxMessage.last_error).where(OutboxMessage.id.in_([e["newest"] for e in found.values()]))
    ).all()) if found else {}
    return [BrokenTemplate(template, where_in_templates(errors[e["newest"]], templates_dir), e["waiting"], e["failed"],
                           e["next"])
            for template, e in sorted(found.items())]
