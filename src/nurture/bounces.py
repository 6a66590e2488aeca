"""Returned mail and complaints: who to suppress after what came back.

``ingest`` applies what :func:`nurture.bounce_classify.classify` finds in each returned message,
one short transaction per message, and leaves a marker per message so reading the same mailbox
again changes nothing. A finding is matched to the outbox row by the original Message-ID (its
HMAC digest proves we sent it), else to the subscriber by address. The readers of Maildir, mbox
and IMAP live in :mod:`nurture.bounce_sources`; both modules' public names are importable from
here too, so callers need one import.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from email.message import Message

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from nurture import outbox
from nurture.bounce_classify import Finding, classify, reported_at
from nurture.bounce_sources import ImapSource, parse_imap_url, read_imap, read_maildir_or_mbox
from nurture.db import transaction
from nurture.messages import message_id as outbox_message_id
from nurture.messages import sender_domain
from nurture.models import Event, OutboxMessage, Status, Subscriber
from nurture.subscribers import find_by_email, mark_status
from nurture.validation import InvalidInput, normalise_email

__all__ = [
    "SEEN",
    "SOFT_LIMIT",
    "SOFT_WINDOW",
    "Finding",
    "ImapSource",
    "IngestReport",
    "classify",
    "ingest",
    "is_our_message_id",
    "outbox_ref",
    "parse_imap_url",
    "read_imap",
    "read_maildir_or_mbox",
]

log = logging.getLogger(__name__)

SOFT_LIMIT = 3  # soft bounces (from distinct sent messages) ...
SOFT_WINDOW = timedelta(days=15)  # ... within this window suppress the address
SEEN = "bounce_seen"
_ACTIVE = (Status.pending, Status.confirmed)

_OUR_ID = re.compile(r"^<(\d+)\.([0-9a-f]{16})@([^<>@\s]+)>$", re.I)


@dataclass
class IngestReport:
    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unmatched: int = 0  # findings that name no subscriber we know
    duplicates: int = 0  # returned messages ingested before
    unparseable: int = 0
    ignored: int = 0  # not a bounce or complaint (auto-replies, anything else in the mailbox)
    suppressed: int = 0  # subscribers newly marked bounced or complained

    def summary(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


# --- matching -----------------------------------------------------------------------------------

def outbox_ref(message_id: str) -> int | None:
    """The outbox row id a Message-ID of ours names, before any check that we really sent it."""
    match = _OUR_ID.match(message_id.strip())
    return int(match.group(1)) if match else None


def is_our_message_id(message_id: str, outbox_id: int, key: str, *, secret: str, domain: str) -> bool:
    """Is this the Message-ID of outbox row ``outbox_id`` (with ``key``)? A forged or guessed id
    fails the HMAC digest. The domain is not compared: it is not secret, and changing the From
    address must not orphan the bounces of mail already sent."""
    expected = outbox_message_id(outbox_id, key, secret=secret, domain=domain)
    return hmac.compare_digest(message_id.strip().lower().partition("@")[0],
                               expected.lower().partition("@")[0])


# --- ingest -------------------------------------------------------------------------------------

def ingest(
    sessions: sessionmaker[Session],
    messages: Iterable[bytes],
    *,
    now: datetime,
    secret: str,
    from_header: str,
) -> IngestReport:
    """Apply what returned messages report: hard bounces and complaints suppress at once; soft
    bounces suppress at the third (from distinct messages) within 15 days. One short transaction
    per returned message; a message seen before (same Message-ID, else same bytes) is skipped."""
    report = IngestReport()
    domain = sender_domain(from_header)
    for raw in messages:
        report.read += 1
        try:
            message = email.message_from_bytes(raw)
            if not raw.strip() or not message.keys():
                raise ValueError("no headers")
            findings = classify(message)
        except Exception as exc:  # noqa: BLE001 - one broken message must not stop the run
            log.warning("unparseable returned message: %s", exc)
            report.unparseable += 1
            continue
        if not findings:
            report.ignored += 1
            continue
        counts: dict[str, int] = {}
        marker = _marker(message, raw)
        with transaction(sessions) as session:
            if _seen(session, marker):
                counts["duplicates"] = 1
            else:
                when = reported_at(message, now)
                done: set[tuple[int, str]] = set()
                for finding in findings:
                    _apply(session, finding, counts, done, now=now, when=when, secret=secret, domain=domain)
                outbox.record_event(session, SEEN, now, detail=marker)
        for name, value in counts.items():
            setattr(report, name, getattr(report, name) + value)
    return report


def _apply(session: Session, finding: Finding, counts: dict[str, int], done: set[tuple[int, str]], *,
           now: datetime, when: datetime, secret: str, domain: str) -> None:
    subscriber, outbox_id = _match(session, finding, secret=secret, domain=domain)
    if subscriber is None:
        counts["unmatched"] = counts.get("unmatched", 0) + 1
        return
    if (subscriber.id, finding.kind) in done:
        return
    done.add((subscriber.id, finding.kind))
    counter = {"hard": "hard", "soft": "soft", "complaint": "complaints"}[finding.kind]
    counts[counter] = counts.get(counter, 0) + 1
    detail = f"{finding.status or '-'} {finding.diagnostic}".strip()
    kind = {"hard": "bounced", "soft": "soft_bounce", "complaint": "complained"}[finding.kind]
    outbox.record_event(session, kind, when, subscriber_id=subscriber.id, outbox_id=outbox_id, detail=detail)
    # Never downgrade: unsubscribed and erased stay so; a complaint outranks a bounce.
    if finding.kind == "complaint":
        new = Status.complained if subscriber.status in (*_ACTIVE, Status.bounced) else None
    elif subscriber.status not in _ACTIVE:
        new = None
    elif finding.kind == "hard":
        new = Status.bounced
    elif _soft_streak(session, subscriber.id, when):
        new = Status.bounced
        outbox.record_event(session, "bounced", when, subscriber_id=subscriber.id, outbox_id=outbox_id,
                            detail=f"{SOFT_LIMIT} soft bounces within {SOFT_WINDOW.days} days; last: {detail}")
    else:
        new = None
    if new is not None:
        mark_status(session, subscriber.id, new, now)
        counts["suppressed"] = counts.get("suppressed", 0) + 1


def _match(session: Session, finding: Finding, *, secret: str, domain: str) -> tuple[Subscriber | None, int | None]:
    """The subscriber (locked) and outbox row a finding is about: by Message-ID, else by address."""
    ref = outbox_ref(finding.message_id) if finding.message_id else None
    if ref is not None:
        row = session.get(OutboxMessage, ref)
        if row is not None and is_our_message_id(finding.message_id, row.id, row.key, secret=secret, domain=domain):
            return _locked(session, row.subscriber_id), row.id
    if finding.address:
        try:
            found = find_by_email(session, normalise_email(finding.address))
        except InvalidInput:
            return None, None
        if found is not None:
            return _locked(session, found.id), None
    return None, None


def _locked(session: Session, subscriber_id: int) -> Subscriber | None:
    # FOR UPDATE on PostgreSQL so an unsubscribe cannot commit between our read and our write;
    # SQLite's BEGIN IMMEDIATE already serialises writers.
    return session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id)
                          .with_for_update().execution_options(populate_existing=True))


def _soft_streak(session: Session, subscriber_id: int, when: datetime) -> bool:
    """SOFT_LIMIT soft bounces of distinct sent messages within any SOFT_WINDOW around ``when``.

    Counted by sent message, because an MTA may warn several times about one delayed message;
    and over any window, because a mailbox backlog is not read in date order."""
    rows = session.execute(
        select(Event.id, Event.outbox_id, Event.created_at).where(
            Event.kind == "soft_bounce", Event.subscriber_id == subscriber_id,
            Event.created_at >= when - SOFT_WINDOW, Event.created_at <= when + SOFT_WINDOW,
        )
    )
    first_seen: dict[object, datetime] = {}
    for event_id, outbox_id, at in rows:
        key = ("o", outbox_id) if outbox_id is not None else ("e", event_id)
        first_seen[key] = min(at, first_seen.get(key, at))
    times = sorted(first_seen.values())
    return any(times[i + SOFT_LIMIT - 1] - times[i] <= SOFT_WINDOW for i in range(len(times) - SOFT_LIMIT + 1))


def _marker(message: Message, raw: bytes) -> str:
    """What identifies a returned message across runs: its own Message-ID, else its bytes."""
    own = (message.get("Message-ID") or "").strip()
    return hashlib.sha256(("id:" + own).encode() if own else raw).hexdigest()


def _seen(session: Session, marker: str) -> bool:
    if session.get_bind().dialect.name == "postgresql":
        # Two ingests of one mailbox at once: the second waits here, then sees the first's marker.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": int.from_bytes(bytes.fromhex(marker[:16]), "big", signed=True)})
    return session.scalar(select(Event.id).where(Event.kind == SEEN, Event.detail == marker).limit(1)) is not None

