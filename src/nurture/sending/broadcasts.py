"""Newsletter broadcasts: an issue sent once to an audience, through the same outbox as everything.

The audience is fixed when the broadcast is created: each recipient gets one outbox row keyed
``bcast:<id>`` then, so a send interrupted by a crash resumes without re-sending, sending it twice
sends nothing twice, and someone who subscribes later is only added when asked (``include_new``).
A broadcast never lands on the same local day as a sequence email for the same person: where they
already had one that day, their copy waits for the next day's send window (and the planner holds
back a sequence step on a day a newsletter is queued for them).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nurture.content.sequences import Sequence, Step
from nurture.message_key import BROADCAST_PREFIX, MessageKey
from nurture.models import Broadcast, OutboxMessage, OutboxState, Status, Subscriber
from nurture.sending import outbox
from nurture.sending.journey import Window, key_of, marketing_history

_TAG = re.compile(r"tag:[a-z0-9][a-z0-9_-]{0,63}")


class BroadcastError(ValueError):
    """A broadcast request that cannot be carried out; the message says why."""


def parse_audience(text: str) -> str:
    """``all``, ``finished`` (finished the sequence) or ``tag:<name>``."""
    value = text.strip().lower()
    if value in ("all", "finished") or _TAG.fullmatch(value):
        return value
    raise BroadcastError(f"unknown audience {text!r}: use all, finished or tag:NAME")


@dataclass(frozen=True)
class BroadcastStatus:
    broadcast: Broadcast
    counts: dict[str, int]

    @property
    def state(self) -> str:
        """scheduled, sending, sent or cancelled, from what its rows say."""
        if self.broadcast.status == "cancelled":
            return "cancelled"
        open_rows = sum(self.counts.get(s, 0) for s in ("queued", "sending", "retry", "unknown"))
        delivered = self.counts.get("sent", 0) + self.counts.get("failed", 0) + self.counts.get("suppressed", 0)
        if open_rows == 0:
            return "sent"
        return "sending" if delivered or self.counts.get("sending") else "scheduled"


def create(
    session: Session,
    *,
    newsletter: Step,
    audience: str,
    send_at: datetime,
    now: datetime,
    sequence: Sequence | None,
    window: Window,
    track_opens: bool = False,
) -> Broadcast:
    """Create a broadcast of ``newsletter`` to ``audience`` going at ``send_at`` (or later per
    person, never on a day they had a sequence email)."""
    audience = parse_audience(audience)
    broadcast = Broadcast(template=newsletter.template, audience=audience, status="scheduled", send_at=send_at,
                          created_at=now, track_opens=track_opens or newsletter.track_opens, recipients=0)
    session.add(broadcast)
    session.flush()
    broadcast.recipients = _add_recipients(session, broadcast, now=now, sequence=sequence, window=window)
    return broadcast


def include_new(session: Session, broadcast_id: int, *, now: datetime, sequence: Sequence | None,
                window: Window) -> int:
    """Add people who joined the audience since the broadcast was created; returns how many."""
    broadcast = _open(session, broadcast_id)
    added = _add_recipients(session, broadcast, now=now, sequence=sequence, window=window)
    broadcast.recipients += added
    return added


def send_now(session: Session, broadcast_id: int, *, now: datetime, window: Window) -> int:
    """Bring a scheduled broadcast forward to ``now``; returns how many copies became due."""
    broadcast = _open(session, broadcast_id)
    broadcast.send_at = min(broadcast.send_at, now)
    rows = session.execute(
        select(OutboxMessage.id, Subscriber.id, Subscriber.timezone)
        .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
        .where(OutboxMessage.key == _key(broadcast), OutboxMessage.state == OutboxState.queued,
               OutboxMessage.due_at > now)
    ).all()
    history = marketing_history(session, now)
    due = [{"id": oid, "due_at": _day_free(now, history.last.get(sid), ZoneInfo(zone), window)}
           for oid, sid, zone in rows]
    if due:
        session.execute(update(OutboxMessage), due)
    return sum(1 for row in due if row["due_at"] <= now)


def deferred(session: Session, broadcast_id: int, *, now: datetime) -> int:
    """How many copies still wait after ``now`` (for ``broadcast send`` to say so): right after
    send_now, those held to the recipient's next local day because they had a sequence email today."""
    return session.scalar(
        select(func.count()).where(OutboxMessage.key == str(MessageKey.broadcast(broadcast_id)),
                                   OutboxMessage.state == OutboxState.queued, OutboxMessage.due_at > now)
    ) or 0


def cancel(session: Session, broadcast_id: int) -> int:
    """Cancel what has not gone yet; returns how many copies were stopped."""
    broadcast = _open(session, broadcast_id)
    broadcast.status = "cancelled"
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.key == _key(broadcast),
               OutboxMessage.state.in_((OutboxState.queued, OutboxState.retry, OutboxState.unknown)))
        .values(state=OutboxState.cancelled)
    )
    # The newsletter no longer holds their day: a sequence step it pushed back may go sooner.
    outbox.replan(session, select(OutboxMessage.subscriber_id).where(
        OutboxMessage.key == _key(broadcast), OutboxMessage.state == OutboxState.cancelled))
    return result.rowcount or 0


def list_broadcasts(session: Session) -> list[BroadcastStatus]:
    broadcasts = session.scalars(select(Broadcast).order_by(Broadcast.id)).all()
    counts: dict[str, Counter] = {_key(b): Counter() for b in broadcasts}
    for key, state, count in session.execute(
        select(OutboxMessage.key, OutboxMessage.state, func.count())
        .where(OutboxMessage.key.startswith(BROADCAST_PREFIX))
        .group_by(OutboxMessage.key, OutboxMessage.state)
    ):
        if key in counts:
            counts[key][state.value] += count
    return [BroadcastStatus(b, dict(counts[_key(b)])) for b in broadcasts]


def _key(broadcast: Broadcast) -> str:
    return str(MessageKey.broadcast(broadcast.id))


def _open(session: Session, broadcast_id: int) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id, with_for_update=True)
    if broadcast is None:
        raise BroadcastError(f"no broadcast with id {broadcast_id}")
    if broadcast.status == "cancelled":
        raise BroadcastError(f"broadcast {broadcast_id} was cancelled")
    return broadcast


def _add_recipients(session: Session, broadcast: Broadcast, *, now: datetime, sequence: Sequence | None,
                    window: Window) -> int:
    people = session.execute(
        select(Subscriber.id, Subscriber.timezone, Subscriber.tags).where(
            Subscriber.status == Status.confirmed,
            Subscriber.wants_newsletter.is_(True),
            Subscriber.email.is_not(None),
        )
    ).all()
    if broadcast.audience.startswith("tag:"):
        tag = broadcast.audience[4:]
        people = [p for p in people if tag in (p.tags or [])]
    history = marketing_history(session, broadcast.send_at)
    if broadcast.audience == "finished":
        if sequence is None:
            raise BroadcastError("the audience 'finished' needs a sequence, and none is defined")
        last_key = key_of(sequence.steps[-1])
        people = [p for p in people if last_key in history.done.get(p.id, ())]
    already = set(session.scalars(select(OutboxMessage.subscriber_id).where(OutboxMessage.key == _key(broadcast))))
    rows = [
        dict(subscriber_id=p.id, key=_key(broadcast), template=broadcast.template,
             due_at=_day_free(broadcast.send_at, history.last.get(p.id), ZoneInfo(p.timezone), window),
             track_opens=broadcast.track_opens)
        for p in people
        if p.id not in already
    ]
    outbox.enqueue_many(session, rows, now=now)
    return len(rows)


def _day_free(at: datetime, last_marketing: datetime | None, zone: ZoneInfo, window: Window) -> datetime:
    """``at``, unless the person had a marketing email that local day: then the next day's window."""
    if last_marketing is not None and last_marketing.astimezone(zone).date() == at.astimezone(zone).date():
        return window.opens(at.astimezone(zone).date() + timedelta(days=1), zone)
    return at
