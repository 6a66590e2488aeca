"""The outbox: the one path every email takes (confirmation, sequence step, broadcast).

A row per (subscriber, key), unique, so enqueueing twice is harmless. A worker claims a batch in
one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
serialises claimers), marks it ``sending`` with a lease, and records each outcome afterwards in
another short transaction. Nothing holds a transaction open across SMTP.

A lease is owned and runs by the real clock (``real_now``), never by the instant a pass plans
for (``now``, which ``send-due --now`` moves): a worker renews its leases while it works and
records outcomes only for rows it still owns, so a long pass is never taken over while it sends.
A worker that dies leaves rows whose lease expires; the next claim picks them up and sends the
same message again (same Message-ID), which is the only way a duplicate can happen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from nurture.db import insert_or_not
from nurture.message_key import BROADCAST_PREFIX, Kind, kind_of
from nurture.models import UNPLANNED, Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.sending.sent_versions import TemplateVersion

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
    content_error: bool = False  # the template could not be rendered: the operator must hear of it
    version: TemplateVersion | None = None  # what the message was built from (None: not built)


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
    values = [queued_row(**row, now=now) for row in rows]
    session.execute(insert_or_not(session, OutboxMessage).on_conflict_do_nothing(index_elements=["subscriber_id", "key"]), values)


def queued_row(*, subscriber_id: int, key: str, template: str, due_at: datetime, now: datetime,
               track_opens: bool = False) -> dict:
    """The column values of a newly queued message (for ``enqueue_many`` and for the signup's
    group insert, which knows its rows are new and inserts them without ON CONFLICT)."""
    return dict(subscriber_id=subscriber_id, key=key, template=template, due_at=due_at, track_opens=track_opens,
                state=OutboxState.queued, created_at=now, attempts=0, unknowns=0)


def wanted(key: str, status: Status, wants_series: bool, wants_newsletter: bool) -> bool:
    """Does the subscriber still want this message? Checked again at claim time and just before
    sending, so a withdrawal committed before either always wins."""
    kind = kind_of(key)
    if kind is Kind.CONFIRMATION:
        return status is Status.pending
    if status is not Status.confirmed:
        return False
    if kind is Kind.SEQUENCE_STEP:
        return wants_series
    if kind is Kind.BROADCAST:
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
    real_now: datetime,
    limit: int,
    lease: timedelta = DEFAULT_LEASE,
    resend_unknown: bool = True,
    key_prefix: str | None = None,
) -> tuple[list[Claim], int]:
    """Claim up to ``limit`` messages due at ``now`` for ``worker``, leased until ``real_now +
    lease``; suppress those no longer wanted. Returns the claims and how many were suppressed."""
    # One small query per kind of due row, each walking the (state, due_at) index in order: a single
    # query with OR would sort every due row to take the first few (slow with 100,000 queued).
    kinds = [
        and_(OutboxMessage.state == OutboxState.sending, OutboxMessage.lease_until < real_now),
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
                lease_until=real_now + lease,
                attempts=OutboxMessage.attempts + 1,
            )
        )
    return claims, len(unwanted)


def count_due(session: Session, *, now: datetime, at_most: int) -> int:
    """Queued and retrying rows due at ``now``, counted up to ``at_most`` (an index range, not a scan)."""
    due = (select(OutboxMessage.id)
           .where(OutboxMessage.state.in_((OutboxState.queued, OutboxState.retry)), OutboxMessage.due_at <= now)
           .limit(at_most).subquery())
    return session.scalar(select(func.count()).select_from(due)) or 0


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


def renew(session: Session, *, worker: str, until: datetime) -> set[int]:
    """Extend every lease ``worker`` still holds to ``until``; return the ids it still holds.
    A row missing from the answer was taken over after its lease ran out: not ours to send."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.worker == worker, OutboxMessage.state == OutboxState.sending)
        .values(lease_until=until)
        .returning(OutboxMessage.id)
    )
    return set(result.scalars())


def owned(session: Session, *, worker: str, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` ``worker`` still holds (locked until the transaction ends on PostgreSQL)."""
    ids = list(ids)
    if not ids:
        return set()
    return set(session.scalars(
        select(OutboxMessage.id)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.worker == worker, OutboxMessage.state == OutboxState.sending)
        .with_for_update()
    ))


def record_outcomes(session: Session, outcomes: Sequence[Outcome], *, now: datetime,
                    worker: str | None = None) -> list[Outcome]:
    """Write what the transport said for a group of messages: one UPDATE executed for many rows
    and one INSERT of events, so the round trips per group do not grow with its size.

    With ``worker``, only rows that worker still holds are written (a row taken over by another
    worker is theirs now; and a retried write after a lost commit changes nothing twice).
    Returns the outcomes written."""
    if worker is not None and outcomes:
        mine = owned(session, worker=worker, ids=[o.claim.id for o in outcomes])
        outcomes = [o for o in outcomes if o.claim.id in mine]
    if not outcomes:
        return []
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
            # The claim counted an attempt; a template that could not be rendered did not try.
            "attempts": claim.attempts - outcome.content_error,
            "due_at": outcome.next_attempt_at or now,
            "template_version": None if outcome.version is None else outcome.version.digest,
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
    return list(outcomes)


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
        replan(session, select(OutboxMessage.subscriber_id)
               .where(OutboxMessage.id.in_(ids), OutboxMessage.key.startswith(BROADCAST_PREFIX)))


def release(session: Session, *, worker: str, ids: Iterable[int] | None = None) -> int:
    """Give back claims of this worker that were never handed to the transport (a graceful stop):
    those in ``ids``, or all of them. A row handed over but whose outcome could not be written is
    not in ``ids``: it stays leased, so it is not resent at once."""
    conditions = [OutboxMessage.worker == worker, OutboxMessage.state == OutboxState.sending]
    if ids is not None:
        ids = list(ids)
        if not ids:
            return 0
        conditions.append(OutboxMessage.id.in_(ids))
    result = session.execute(
        update(OutboxMessage)
        .where(*conditions)
        .values(state=OutboxState.queued, worker=None, lease_until=None, attempts=OutboxMessage.attempts - 1)
    )
    return result.rowcount or 0


def cancel_pending(session: Session, subscriber_id: int, prefixes: tuple[str, ...], *, now: datetime) -> int:
    """Suppress queued messages with these key prefixes (an unsubscribe, a bounce, a goal reached);
    returns how many."""
    if not prefixes:
        return 0
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.subscriber_id == subscriber_id,
            OutboxMessage.state.in_(_OPEN),
            or_(*(OutboxMessage.key.startswith(p) for p in prefixes)),
        )
        .values(state=OutboxState.suppressed)
    )
    if BROADCAST_PREFIX in prefixes:
        replan(session, [subscriber_id])
    return result.rowcount or 0


def replan(session: Session, who: Iterable[int] | Select) -> None:
    """Look at these subscribers again at the next pass (ids, or a query of ids): a marketing
    email of theirs no longer counts (it failed, was suppressed or cancelled), so it no longer
    holds a day, and their next sequence step may go sooner than their stored instant."""
    if isinstance(who, Select):
        session.execute(update(Subscriber).where(Subscriber.id.in_(who)).values(next_due_at=UNPLANNED))
        return
    ids = sorted(set(who))
    for start in range(0, len(ids), 1000):
        session.execute(update(Subscriber).where(Subscriber.id.in_(ids[start:start + 1000]))
                        .values(next_due_at=UNPLANNED))


def recent_rates(session: Session, *, since: datetime) -> tuple[int, int]:
    """(distinct complainers, emails sent) since ``since``, from the events table."""
    return recent_complainers(session, since=since), recent_sent(session, since=since)


def recent_complainers(session: Session, *, since: datetime) -> int:
    """People, not reports: a provider may relay one person's complaint several times, and one
    angry reader must not weigh like four. Only verified complaints are "complained" events
    (an untrusted report is recorded as "unverified"), so a forgery counts for nothing."""
    return session.scalar(
        select(func.count(func.distinct(Event.subscriber_id)))
        .where(Event.kind == "complained", Event.created_at >= since)
    ) or 0


def recent_sent(session: Session, *, since: datetime, at_most: int | None = None) -> int:
    """Emails sent since ``since``; counting stops at ``at_most``, so a question such as "were
    there at least k?" costs k index entries, not a week of sending."""
    sent = select(Event.id).where(Event.kind == "sent", Event.created_at >= since)
    if at_most is not None:
        sent = sent.limit(at_most)
    return session.scalar(select(func.count()).select_from(sent.subquery())) or 0


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
    """At most ``limit`` characters that any database stores: a server reply or an exception
    message can carry a NUL (PostgreSQL refuses it in text) or a lone surrogate (not UTF-8), and
    one such reply must not stop the outcomes of a whole chunk from being written."""
    if text is None:
        return None
    text = text[:limit]
    if text.isprintable() and text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
