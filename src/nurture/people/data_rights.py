"""A person's rights over their data (GDPR articles 15 and 17, CCPA): see everything held about
them, and have it erased.

Erasure removes what identifies the person and keeps what the clinic must be able to show: the
consent ledger's facts (when, how, which wording), the counts behind the reports, and the
address's keyed hash as a tombstone (HMAC under a pepper kept in the database, so a copy of the
database cannot be checked against guessed addresses), so no later import or old list can re-add
the address. Only the person can come back, by signing up again through the double opt-in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from nurture.message_key import ALL_PREFIXES, Kind, MessageKey
from nurture.models import Broadcast, ConsentEvent, Event, OutboxMessage, Status
from nurture.people.address_hashes import find_by_email, stored_hash
from nurture.people.goals import bookings_of
from nurture.people.validation import normalise_email
from nurture.people.webhook_events import forget as forget_webhook_events
from nurture.sending import outbox

FORMAT = "nurture-personal-data/2"  # 2: email_hash (keyed) replaced email_sha256
ERASED_TIMEZONE = "UTC"


def export_personal(session: Session, email: str) -> dict[str, Any] | None:
    """Everything held about the person with this address, as JSON-ready data (strings, numbers,
    booleans, lists, dicts; times in ISO 8601 UTC), or None when the address is unknown.
    Raises validation.InvalidInput for something that is not an email address.

    An erased person is still found by the address's hash; what is left is the tombstone."""
    subscriber = find_by_email(session, normalise_email(email))
    if subscriber is None:
        return None
    sid = subscriber.id
    ledger = session.scalars(
        select(ConsentEvent).where(ConsentEvent.subscriber_id == sid).order_by(ConsentEvent.id)
    ).all()
    messages = session.scalars(
        select(OutboxMessage).where(OutboxMessage.subscriber_id == sid).order_by(OutboxMessage.id)
    ).all()
    events = session.scalars(
        select(Event)
        .where(or_(Event.subscriber_id == sid, Event.outbox_id.in_([m.id for m in messages] or [-1])))
        .order_by(Event.id)
    ).all()
    keys = (MessageKey.parse_or_none(m.key) for m in messages)
    broadcast_ids = sorted({k.broadcast_id for k in keys if k is not None and k.kind is Kind.BROADCAST})
    broadcasts = session.scalars(
        select(Broadcast).where(Broadcast.id.in_(broadcast_ids or [-1])).order_by(Broadcast.id)
    ).all()
    key_of = {m.id: m.key for m in messages}
    # One literal of the whole export format (long, but it reads as the document it produces, and a
    # field added to the format is added here and nowhere else).
    return {
        "format": FORMAT,
        "subscriber": {
            "email": subscriber.email,
            "email_hash": subscriber.email_hash,
            "first_name": subscriber.first_name,
            "timezone": subscriber.timezone,
            "status": subscriber.status.value,
            "wants_series": subscriber.wants_series,
            "wants_newsletter": subscriber.wants_newsletter,
            "sequence": subscriber.sequence,
            "tags": list(subscriber.tags or []),
            "created_at": _time(subscriber.created_at),
            "updated_at": _time(subscriber.updated_at),
            "confirmed_at": _time(subscriber.confirmed_at),
            "status_changed_at": _time(subscriber.status_changed_at),
            "confirmation_rounds": subscriber.confirm_round,
        },
        "consent": [
            {
                "kind": c.kind,
                "scope": c.scope,
                "at": _time(c.created_at),
                "source": c.source,
                "ip": c.ip,
                "user_agent": c.user_agent,
                "wording_version": c.wording_version,
                "wording": c.wording,
            }
            for c in ledger
        ],
        "messages": [
            {
                "key": m.key,
                "template": m.template,
                "state": m.state.value,
                "created_at": _time(m.created_at),
                "due_at": _time(m.due_at),
                "sent_at": _time(m.sent_at),
                "attempts": m.attempts,
                "smtp_reply": m.smtp_reply,
                "last_error": m.last_error,
                "open_tracking": m.track_opens,
            }
            for m in messages
        ],
        "events": [
            {
                "kind": e.kind,
                "at": _time(e.created_at),
                "message": key_of.get(e.outbox_id),
                "detail": e.detail,
            }
            for e in events
        ],
        "broadcasts": [
            {"id": b.id, "template": b.template, "send_at": _time(b.send_at), "status": b.status}
            for b in broadcasts
        ],
        "bookings": [
            {"goal": g.goal, "booked_at": _time(g.booked_at), "received_at": _time(g.received_at),
             "source": g.source, "external_id": g.external_id}
            for g in bookings_of(session, sid)
        ],
    }


def erase(session: Session, email: str, *, now: datetime) -> bool:
    """Erase the person with this address: their address, name and tags, the IP addresses and
    browsers in their consent ledger, and the server replies and event details that can quote the
    address (a click keeps only the link's scheme, host and path). Queued mail is cancelled. Kept: the address's hash (so imports skip it), the ledger's kind,
    time, source and wording, and every outbox and event row (the report counts).

    Returns False when nothing was done: the address is unknown or already erased.
    Raises validation.InvalidInput for something that is not an email address."""
    address = normalise_email(email)
    subscriber = find_by_email(session, address)
    if subscriber is None or subscriber.status is Status.erased:
        return False
    sid = subscriber.id
    # The tombstone is what stays: keyed, even on a row an older process wrote with the plain hash.
    subscriber.email_hash = stored_hash(session, address)
    subscriber.email = None
    subscriber.first_name = None
    subscriber.timezone = ERASED_TIMEZONE
    subscriber.tags = []  # tags can say things about a patient
    subscriber.wants_series = subscriber.wants_newsletter = False
    subscriber.status = Status.erased
    subscriber.status_changed_at = subscriber.updated_at = now
    session.flush()
    outbox.cancel_pending(session, sid, ALL_PREFIXES, now=now)
    session.execute(
        update(ConsentEvent).where(ConsentEvent.subscriber_id == sid).values(ip=None, user_agent=None)
    )
    # The erasure is a withdrawal of consent too; the ledger shows why the mail stopped.
    session.add(ConsentEvent(subscriber_id=sid, kind="erase", scope="all", created_at=now, ip=None,
                             user_agent=None, source="erasure-request", wording=None, wording_version=None))
    own_messages = select(OutboxMessage.id).where(OutboxMessage.subscriber_id == sid)
    session.execute(
        update(OutboxMessage).where(OutboxMessage.subscriber_id == sid).values(smtp_reply=None, last_error=None)
    )
    events = session.execute(
        select(Event.id, Event.kind, Event.detail)
        .where(or_(Event.subscriber_id == sid, Event.outbox_id.in_(own_messages)), Event.detail.is_not(None))
    ).all()
    if events:
        session.execute(
            update(Event).execution_options(synchronize_session=False),
            [{"id": eid, "detail": _kept_detail(kind, detail, address)} for eid, kind, detail in events],
        )
    forget_webhook_events(session, sid)  # their address is in the bodies, delivered or not
    outbox.record_event(session, "erased", now, subscriber_id=sid)
    return True


def _kept_detail(kind: str, detail: str, address: str) -> str | None:
    """What is left of an event's detail after erasure. Bounce reports and server replies quote
    the address: gone. A click keeps the link the clinic wrote, without its query or fragment
    (where a personal value would sit), so the consultation-goal figures stay as they were."""
    if kind != "clicked":
        return None
    parts = urlsplit(detail)
    if not parts.scheme or not parts.hostname:
        return None
    port = f":{parts.port}" if parts.port else ""
    link = urlunsplit((parts.scheme, parts.hostname + port, parts.path, "", ""))
    local = address.split("@", 1)[0]
    plain = unquote(link).lower()
    return None if address in plain or (len(local) >= 4 and local in plain) else link


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
