"""The outbox: the one path every email takes (confirmation, sequence step, broadcast).

A row per (subscriber, key), unique, so enqueueing twice is harmless. A worker claims a batch in
one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
serialises claimers), marks it ``sending`` with a lease, and records each outcome afterwards in
another short transaction. Nothing holds a transaction open across SMTP. A worker that dies
leaves rows whose lease expires; the next claim picks them up and sends the same message again
(same Message-ID), which is the only way a duplicate can happen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture.models import Event, OutboxMessage, OutboxState, Status, Subscriber

DEFAULT_LEASE = timedelta(minutes=5)
_OPEN = (OutboxState.queued, OutboxState.retry, OutboxState.unknown)


@dataclass(frozen=True)
class Claim:
    """A claimed message and what rendering it needs to know about its subscriber."""

    id: int
    key: str
    template: str
    attempts: int  # including this one
    unknowns: int
    track_opens: bool
    subscriber_id: int
    email: str
    first_name: str | None
    timezone: str


@dataclass(frozen=True)
class Outcome:
    """What happened when a claimed message was handed to the transport."""

    claim: Claim
    state: OutboxState  # sent, retry, failed, unknown
    reply: str | None = None
    next_attempt_at: datetime | None = None
    bounced: bool = False  # the reply says the address does not exist


def enqueue(
    session: Session,
    *,
    subscriber_id: int,
    key: str,
    template: str,
    due_at: datetime,
    now: datetime,
    track_opens: bool = False,
) -> None:
    """Queue one message unless the subscriber already has one with this key."""
    enqueue_many(session, [dict(subscriber_id=subscriber_id, key=key, template=template, due_at=due_at,
                                track_opens=track_opens)], now=now)


def enqueue_many(session: Session, rows: Sequence[dict], *, now: datetime) -> None:
    """Queue many messages in one statement; rows that exist already are left alone."""
    if not rows:
        return
    values = [
        {"track_opens": False, **row, "state": OutboxState.queued, "created_at": now, "attempts": 0, "unknowns": 0}
        for row in rows
    ]
    dialect = session.get_bind().dialect.name
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(OutboxMessage)
    session.execute(statement.on_conflict_do_nothing(index_elements=["subscriber_id", "key"]), values)


def wanted(key: str, status: Status, wants_series: bool, wants_newsletter: bool) -> bool:
    """Does the subscriber still want this message? Checked again at claim time and just before
    sending, so a withdrawal committed before either always wins."""
    if key.startswith("sys:confirm:"):
        return status is Status.pending
    if status is not Status.confirmed:
        return False
    if key.startswith("seq:"):
        return wants_series
    if key.startswith("bcast:"):
        return wants_newsletter
    return True


# What rendering a message needs: the row, then its subscriber (the order of Claim's fields).
_CLAIM_COLUMNS = (
    OutboxMessage.id, OutboxMessage.key, OutboxMessage.template, OutboxMessage.attempts, OutboxMessage.unknowns,
    OutboxMessage.track_opens, Subscriber.id, Subscriber.email, Subscriber.first_name, Subscriber.timezone,
)


def claim_batch(
    session: Session,
    *,
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta = DEFAULT_LEASE,
    resend_unknown: bool = True,
    key_prefix: str | None = None,
) -> tuple[list[Claim], int]:
    """Claim up to ``limit`` due messages for ``worker``; suppress those no longer wanted.

    Returns the claims and how many rows were suppressed instead."""
    # One small query per kind of due row, each walking the (state, due_at) index in order: a single
    # query with OR would sort every due row to take the first few (slow with 100,000 queued).
    kinds = [
        and_(OutboxMessage.state == OutboxState.sending, OutboxMessage.lease_until < now),
        and_(OutboxMessage.state == OutboxState.retry, OutboxMessage.due_at <= now),
    ]
    if resend_unknown:
        kinds.append(and_(OutboxMessage.state == OutboxState.unknown, OutboxMessage.unknowns < 2,
                          OutboxMessage.due_at <= now))
    kinds.append(and_(OutboxMessage.state == OutboxState.queued, OutboxMessage.due_at <= now))
    rows = []
    for condition in kinds:
        if len(rows) >= limit:
            break
        query = (
            select(*_CLAIM_COLUMNS, Subscriber.status, Subscriber.wants_series, Subscriber.wants_newsletter)
            .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
            .where(condition)
            .order_by(OutboxMessage.due_at)
            .limit(limit - len(rows))
            .with_for_update(skip_locked=True, of=OutboxMessage)
        )
        if key_prefix:
            query = query.where(OutboxMessage.key.startswith(key_prefix))
        rows.extend(session.execute(query).all())
    claims: list[Claim] = []
    unwanted: list[int] = []
    for row in rows:
        (oid, key, template, attempts, unknowns, track, sid, email, first, zone, status, series, news) = row
        if email is None or not wanted(key, status, series, news):
            unwanted.append(oid)
            continue
        claims.append(Claim(oid, key, template, attempts + 1, unknowns, track, sid, email, first, zone))
    suppress_unwanted(session, unwanted)
    if claims:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([c.id for c in claims]))
            .values(
                state=OutboxState.sending,
                worker=worker,
                lease_until=now + lease,
                attempts=OutboxMessage.attempts + 1,
            )
        )
    return claims, len(unwanted)


def claim_of(session: Session, outbox_id: int) -> Claim | None:
    """A read-only Claim for an existing row (to render a sent message again, e.g. for a click)."""
    row = session.execute(
        select(*_CLAIM_COLUMNS)
        .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
        .where(OutboxMessage.id == outbox_id)
    ).one_or_none()
    return None if row is None or row[7] is None else Claim(*row)


def still_wanted(session: Session, claims: Iterable[Claim]) -> set[int]:
    """Ids of the claims whose subscriber still wants them, in one query (the pre-send check)."""
    claims = list(claims)
    if not claims:
        return set()
    rows = session.execute(
        select(Subscriber.id, Subscriber.status, Subscriber.wants_series, Subscriber.wants_newsletter).where(
            Subscriber.id.in_({c.subscriber_id for c in claims})
        )
    )
    by_id = {sid: (status, series, news) for sid, status, series, news in rows}
    return {c.id for c in claims if c.subscriber_id in by_id and wanted(c.key, *by_id[c.subscriber_id])}


def record_outcomes(session: Session, outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """Write what the transport said for a group of messages: one UPDATE executed for many rows
    and one INSERT of events, so the round trips per group do not grow with its size."""
    if not outcomes:
        return
    rows = []
    for outcome in outcomes:
        claim = outcome.claim
        rows.append({
            "row_id": claim.id,
            "state": outcome.state,
            "smtp_reply": _clip(outcome.reply),
            "worker": None,
            "lease_until": None,
            "sent_at": now if outcome.state is OutboxState.sent else None,
            "last_error": None if outcome.state is OutboxState.sent else _clip(outcome.reply),
            "unknowns": claim.unknowns + (outcome.state is OutboxState.unknown),
            "due_at": outcome.next_attempt_at or now,
        })
    # Core executemany by primary key: the ORM's bulk path re-evaluates each row in Python.
    table = OutboxMessage.__table__
    session.execute(update(table).where(table.c.id == bindparam("row_id")), rows)
    events = [
        {"kind": _EVENT_KINDS[o.state], "created_at": now, "outbox_id": o.claim.id,
         "subscriber_id": o.claim.subscriber_id, "detail": _clip(o.reply)}
        for o in outcomes
        if o.state in _EVENT_KINDS
    ]
    if events:
        session.execute(insert(Event.__table__), events)


_EVENT_KINDS = {OutboxState.sent: "sent", OutboxState.failed: "failed"}


def suppress_unwanted(session: Session, ids: Iterable[int]) -> None:
    """Messages whose subscriber no longer wants them (found at claim time or just before
    sending): never sent."""
    ids = list(ids)
    if ids:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(state=OutboxState.suppressed, worker=None, lease_until=None)
        )


def release(session: Session, *, worker: str) -> int:
    """Give back this worker's claims that were never handed to the transport (graceful stop)."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.worker == worker, OutboxMessage.state == OutboxState.sending)
        .values(state=OutboxState.queued, worker=None, lease_until=None, attempts=OutboxMessage.attempts - 1)
    )
    return result.rowcount or 0


def cancel_pending(session: Session, subscriber_id: int, prefixes: tuple[str, ...], *, now: datetime) -> None:
    """Suppress queued messages with these key prefixes (an unsubscribe or a bounce)."""
    if not prefixes:
        return
    session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.subscriber_id == subscriber_id,
            OutboxMessage.state.in_(_OPEN),
            or_(*(OutboxMessage.key.startswith(p) for p in prefixes)),
        )
        .values(state=OutboxState.suppressed)
    )


def recent_rates(session: Session, *, since: datetime) -> tuple[int, int]:
    """(complaints, emails sent) since ``since``, from the events table."""
    counts = dict(session.execute(
        select(Event.kind, func.count()).where(Event.kind.in_(("complained", "sent")), Event.created_at >= since)
        .group_by(Event.kind)
    ).all())
    return counts.get("complained", 0), counts.get("sent", 0)


def record_event(
    session: Session,
    kind: str,
    now: datetime,
    *,
    subscriber_id: int | None = None,
    outbox_id: int | None = None,
    detail: str | None = None,
) -> None:
    session.add(Event(kind=kind, created_at=now, subscriber_id=subscriber_id, outbox_id=outbox_id,
                      detail=_clip(detail)))


def _clip(text: str | None, limit: int = 500) -> str | None:
    return None if text is None else text[:limit]
