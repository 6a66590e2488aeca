"""One subscriber's story, for `nurture explain EMAIL` and the dashboard's search box:
what was sent when (Message-ID, server reply), clicks, bookings of a consultation (the goal),
what comes next and when in their local time, or why nothing will."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from nurture.content.sequences import TemplateFormatError
from nurture.feedback.reports import shown_reason
from nurture.message_key import MARKETING_PREFIXES, Kind, MessageKey
from nurture.models import ConsentEvent, Event, OutboxMessage, Status, Subscriber
from nurture.people.address_hashes import find_by_email
from nurture.people.goals import bookings_of, reached_goal
from nurture.sending.journey import Planner, marketing_history, next_send
from nurture.sending.messages import message_id, sender_domain
from nurture.sending.step_conditions import SKIPPED, is_skipped

_WAITING = ("queued", "sending", "retry", "unknown")


@dataclass(frozen=True)
class Entry:
    at: datetime
    what: str
    detail: str = ""


@dataclass
class Timeline:
    email: str
    status: str
    timezone: str
    entries: list[Entry] = field(default_factory=list)
    next_step: str | None = None
    next_at: datetime | None = None
    why_nothing: str | None = None

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(ZoneInfo(self.timezone))


def build_timeline(
    session: Session, email: str, *, now: datetime, planner: Planner, secret: str, from_header: str
) -> Timeline | None:
    """The timeline of the subscriber with this (normalised) address, or None if unknown."""
    subscriber = find_by_email(session, email)
    if subscriber is None:
        return None
    timeline = Timeline(email=email, status=subscriber.status.value, timezone=subscriber.timezone)
    for event in session.scalars(select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id)):
        scope = "" if event.scope == "all" else f" ({event.scope})"
        timeline.entries.append(Entry(event.created_at, f"consent {event.kind}{scope}",
                                      f"via {event.source}" + (f" from {event.ip}" if event.ip else "")))
    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.subscriber_id == subscriber.id)).all()
    domain = sender_domain(from_header)
    for row in rows:
        if is_skipped(row.state, row.last_error):  # a step its condition left out: never sent, no Message-ID
            timeline.entries.append(Entry(row.due_at, f"{row.key} · skipped", row.last_error.removeprefix(SKIPPED)))
            continue
        at = row.sent_at or row.due_at
        reply = shown_reason(row.smtp_reply or row.last_error, planner.templates_dir)
        detail = f"{message_id(row.id, row.key, secret=secret, domain=domain)} · {reply}"
        if row.template_version:  # which version of the email it was built from (`templates impact`)
            detail = f"{detail.strip(' ·')} · version {row.template_version[:10]}"
        timeline.entries.append(Entry(at, f"{row.key} · {row.state.value}", detail.strip(" ·")))
    keys = {row.id: row.key for row in rows}
    for event in session.scalars(select(Event).where(
            Event.kind.in_(("clicked", "opened")),
            or_(Event.subscriber_id == subscriber.id, Event.outbox_id.in_(list(keys) or [-1])))):
        about = keys.get(event.outbox_id, "")
        detail = event.detail or "" if event.kind == "clicked" else "the open pixel loaded"
        timeline.entries.append(Entry(event.created_at, f"{event.kind}{' · ' + about if about else ''}", detail))
    for goal in bookings_of(session, subscriber.id):
        external = f" (id {goal.external_id})" if goal.external_id else ""
        timeline.entries.append(Entry(goal.booked_at, "goal · booked a consultation",
                                      f"via {goal.source}{external}, received {goal.received_at:%Y-%m-%d %H:%M} UTC"))
    timeline.entries.sort(key=lambda e: e.at)
    _explain_next(session, timeline, subscriber, rows, now, planner)
    return timeline


def _explain_next(
    session: Session, timeline: Timeline, subscriber: Subscriber, rows, now: datetime, planner: Planner
) -> None:
    if subscriber.status is not Status.confirmed:
        reasons = {
            Status.pending: "they have not confirmed their address yet (the series starts when they do); signed up",
            Status.unsubscribed: "unsubscribed",
            Status.bounced: "the address bounced",
            Status.complained: "the person marked an email as spam",
            Status.erased: "personal data erased on request",
        }
        timeline.why_nothing = f"{reasons[subscriber.status]} on {subscriber.status_changed_at:%Y-%m-%d %H:%M} UTC"
        return
    if not subscriber.wants_series:
        timeline.why_nothing = "stopped the series (still receives the newsletter)" if subscriber.wants_newsletter \
            else "stopped the series"
        return
    waiting = sorted((r for r in rows if r.key.startswith(MARKETING_PREFIXES) and r.state.value in _WAITING),
                     key=lambda r: r.due_at)
    if waiting:
        # Queued or being retried: that message is what comes next, at its own time.
        timeline.next_step, timeline.next_at = _label(waiting[0].key), max(waiting[0].due_at, now)
        return
    booked = reached_goal(session, subscriber.id)
    if booked is not None:
        timeline.why_nothing = (f"booked a consultation on {booked:%Y-%m-%d %H:%M} UTC, which ended the series; "
                                + ("receives the newsletter" if subscriber.wants_newsletter else "stopped the newsletter"))
        return
    try:
        sequence = planner.sequence()
    except TemplateFormatError as exc:
        timeline.why_nothing = f"the sequence cannot be read: {exc}"
        return
    if sequence is None:
        timeline.why_nothing = f"the sequence {planner.sequence_name!r} has no templates"
        return
    history = marketing_history(session, now, ids=[subscriber.id])
    found = next_send(sequence, confirmed_at=subscriber.confirmed_at, zone=ZoneInfo(subscriber.timezone),
                      done_keys=history.done.get(subscriber.id, set()),
                      last_marketing_at=history.last.get(subscriber.id), now=now, window=planner.window)
    if found is None:
        timeline.why_nothing = "finished the sequence; receives the newsletter" if subscriber.wants_newsletter \
            else "finished the sequence and stopped the newsletter"
        return
    step = found[0]
    # A step with a condition is decided when it falls due; say so, rather than promise it.
    conditions = "; ".join(str(c) for c in step.conditions)
    timeline.next_step = f"{step.key} ({conditions}: decided when due)" if conditions else step.key
    timeline.next_at = found[1]


def _label(key: str) -> str:
    """How a queued message is named to a person: the step key, or the broadcast."""
    parsed = MessageKey.parse_or_none(key)
    if parsed is None:
        return key
    return f"newsletter (broadcast {parsed.broadcast_id})" if parsed.kind is Kind.BROADCAST else str(parsed.step)
