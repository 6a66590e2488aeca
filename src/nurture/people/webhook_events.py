"""Webhook events: what happened, written where it happened (a transactional outbox).

:func:`emit` is called inside the transaction of the change it reports (a signup, a confirmation,
an unsubscribe, a bounce or complaint, a click, a goal), so the event exists exactly when the
change does: a rolled-back change leaves no event, a committed one always has its deliveries
queued. It writes the event's JSON body once, and one delivery row per endpoint that asked for
the kind; :mod:`nurture.people.webhook_delivery` posts them later, never inside the request or
the mail pass.

The body holds the event's id, kind and time, the person's address and ids, and the few facts
the kind needs (the clicked URL, the message key, the unsubscribe scope, the goal): never an IP
address, a user agent or a name. Anything else given to :func:`emit` is refused, so a new call
site cannot widen what leaves the clinic by accident.

With no endpoint registered, an emit costs one query on a table of a few rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from nurture.models import OutboxMessage, Subscriber, WebhookDelivery, WebhookEndpoint, WebhookEvent

EVENT_KINDS = ("subscribed", "confirmed", "unsubscribed", "bounced", "complained", "clicked", "goal")
# The facts an event may carry besides who and when (data minimisation: see the module docstring).
DETAILS = ("outbox_id", "message_key", "url", "scope", "goal")


class UnknownEvent(ValueError):
    """An event kind or detail outside the documented vocabulary."""


def emit(session: Session, kind: str, *, now: datetime, subscriber_id: int | None, email: str | None = None,
         **details: object) -> int:
    """Record that ``kind`` happened to a subscriber at ``now``, in the caller's transaction, and
    queue it for every endpoint subscribed to ``kind``. ``email`` is looked up when not given;
    ``details`` are among :data:`DETAILS` (``outbox_id`` also fills in ``message_key``).
    Returns the number of deliveries queued (0 when no endpoint wants this kind)."""
    return emit_many(session, kind, [dict(now=now, subscriber_id=subscriber_id, email=email, **details)])


def emit_many(session: Session, kind: str, happenings: Iterable[dict]) -> int:
    """:func:`emit` for several events of one kind (the signups of one group commit): each dict
    holds ``emit``'s keyword arguments. One query finds the endpoints for all of them."""
    if kind not in EVENT_KINDS:
        raise UnknownEvent(f"unknown webhook event {kind!r}")
    happenings = list(happenings)
    # FOR KEY SHARE (PostgreSQL): an endpoint being removed waits for this transaction rather than
    # vanish between this read and the insert below and fail it (a signup, a confirmation) with a
    # foreign key error. Recording a delivery locks the row FOR NO KEY UPDATE, which never waits on
    # this. SQLite's write lock serialises it all anyway.
    endpoints = [endpoint_id for endpoint_id, events in session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events).with_for_update(read=True, key_share=True))
        if kind in events.split(",")]
    if not endpoints or not happenings:
        return 0
    queued = 0
    for happening in happenings:
        event_id = _write_event(session, kind, **happening)
        when = happening["now"]
        session.execute(insert(WebhookDelivery), [
            dict(event_id=event_id, endpoint_id=endpoint_id, state="queued", due_at=when, created_at=when, attempts=0)
            for endpoint_id in endpoints])
        queued += len(endpoints)
    return queued


def _write_event(session: Session, kind: str, *, now: datetime, subscriber_id: int | None, email: str | None,
                 **details: object) -> int:
    unknown = set(details) - set(DETAILS)
    if unknown:
        raise UnknownEvent(f"webhook events carry no {', '.join(sorted(unknown))}")
    if email is None and subscriber_id is not None:
        email = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
    if details.get("outbox_id") is not None and "message_key" not in details:
        details["message_key"] = session.scalar(select(OutboxMessage.key).where(OutboxMessage.id == details["outbox_id"]))
    public_id = f"evt_{uuid.uuid4().hex}"
    body = {"id": public_id, "kind": kind, "occurred_at": _iso(now), "subscriber_id": subscriber_id, "email": email,
            **{name: value for name, value in details.items() if value is not None}}
    return session.execute(insert(WebhookEvent).returning(WebhookEvent.id), dict(
        public_id=public_id, kind=kind, occurred_at=now, subscriber_id=subscriber_id,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")))).scalar_one()


def forget(session: Session, subscriber_id: int) -> None:
    """An erased person's events go, with their deliveries and log (nothing undelivered still
    carries the address out, and nothing delivered keeps it here)."""
    session.execute(delete(WebhookEvent).where(WebhookEvent.subscriber_id == subscriber_id))


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"subscribed,confirmed"`` as a tuple of known kinds, in the documented order; one line
    naming the unknown ones (and the known) otherwise."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(EVENT_KINDS))
    if unknown:
        raise UnknownEvent(f"unknown event {', '.join(unknown)} (known: {', '.join(EVENT_KINDS)})")
    if not names:
        raise UnknownEvent(f"no events named (known: {', '.join(EVENT_KINDS)})")
    return tuple(kind for kind in EVENT_KINDS if kind in names)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
