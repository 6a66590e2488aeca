"""Returned mail and complaints: who to suppress after what came back.

``ingest`` applies what :func:`nurture.bounce_classify.classify` finds in each returned message,
one short transaction per message, and leaves a marker per message so reading the same mailbox
again changes nothing.

A report is evidence only when it is tied to us, because anyone can mail the bounce mailbox: it
names a Message-ID we sent (its HMAC digest proves it; the finding is about that row's
subscriber), or it comes from a feedback loop the operator trusts and is DKIM-signed by it
(:mod:`nurture.bounce_trust`; the finding is about the address it names). Anything else is
recorded as an ``unverified`` event that says what it claimed and why it was not believed; it
suppresses nobody and counts in no rate. The readers of Maildir, mbox and IMAP live in
:mod:`nurture.bounce_sources`; both modules' public names are importable from here too, so
callers need one import.

The same mailbox receives the mails that List-Unsubscribe's ``mailto:`` sends (messages.py): their
subject is ``unsubscribe <token>``, the token of that person's one-click link, signed with our key.
The token is the proof, as it is for the link: a stranger cannot make one for someone else's
address, and a mail without a valid token unsubscribes nobody (it is recorded as unverified).
"""

from __future__ import annotations

import email
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from email.message import Message

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from nurture.db import transaction
from nurture.feedback.bounce_classify import Finding, classify, reported_at
from nurture.feedback.bounce_sources import ImapSource, parse_imap_url, read_imap, read_maildir_or_mbox
from nurture.feedback.bounce_trust import DnsFunc, SenderVerdict, judge_sender
from nurture.models import Event, OutboxMessage, Status, Subscriber
from nurture.people.address_hashes import find_by_email
from nurture.people.consent_ledger import RequestInfo
from nurture.people.subscribers import mark_status, unsubscribe
from nurture.people.validation import InvalidInput, normalise_email
from nurture.sending import outbox
from nurture.sending.messages import message_id as outbox_message_id
from nurture.sending.messages import sender_domain
from nurture.tokens import InvalidToken, Tokens

__all__ = [
    "SEEN",
    "SOFT_LIMIT",
    "SOFT_WINDOW",
    "UNVERIFIED",
    "Finding",
    "ImapSource",
    "IngestReport",
    "UnverifiedReport",
    "classify",
    "ingest",
    "is_our_message_id",
    "outbox_ref",
    "parse_imap_url",
    "read_imap",
    "read_maildir_or_mbox",
    "recent_unverified",
]

log = logging.getLogger(__name__)

SOFT_LIMIT = 3  # soft bounces (from distinct sent messages) ...
SOFT_WINDOW = timedelta(days=15)  # ... within this window suppress the address
SEEN = "bounce_seen"
UNVERIFIED = "unverified"  # a report not tied to us: what it claimed, and why it was not believed
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
    unverified: int = 0  # findings in reports not tied to a message we sent: recorded, not applied
    deferred: int = 0  # reports left unread for the next run: DNS did not answer for their DKIM key
    unsubscribed: int = 0  # people unsubscribed by a mail to the List-Unsubscribe address

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
    trusted_senders: Sequence[str] = (),
    dnsfunc: DnsFunc | None = None,
) -> IngestReport:
    """Apply what returned messages report, when they are tied to us: hard bounces and complaints
    suppress at once; soft bounces suppress at the third (from distinct messages) within 15 days.
    Reports not tied to us are recorded as unverified and change nothing else.

    One short transaction per returned message; a message seen before (same Message-ID, else
    same bytes) is skipped. ``trusted_senders`` is NURTURE_TRUSTED_FEEDBACK_SENDERS; ``dnsfunc``
    replaces dkimpy's DNS lookup (tests)."""
    report = IngestReport()
    domain = sender_domain(from_header)
    for raw in messages:
        report.read += 1
        try:
            message = email.message_from_bytes(raw)
            if not raw.strip() or not message.keys():
                raise ValueError("no headers")
            token = unsubscribe_token(message)
            findings = classify(message) if token is None else []
        except Exception as exc:  # noqa: BLE001 - one broken message must not stop the run
            log.warning("unparseable returned message: %s", exc)
            report.unparseable += 1
            continue
        if token is not None:
            _unsubscribe_by_mail(sessions, token, _marker(message, raw), report, now=now, secret=secret)
            continue
        if not findings:
            report.ignored += 1
            continue
        marker = _marker(message, raw)
        with sessions() as session:
            # A cheap, unlocked look first: a mailbox read again must not cost a DNS lookup per report.
            if _seen(session, marker, lock=False):
                report.duplicates += 1
                continue
        # Judged outside the transaction: DKIM may wait on DNS, and no lock is held across that.
        verdict = _judge(raw, message, trusted_senders, dnsfunc)
        counts: dict[str, int] = {}
        try:
            with transaction(sessions) as session:
                if _seen(session, marker):
                    counts["duplicates"] = 1
                else:
                    when = reported_at(message, now)
                    done: set[tuple] = set()
                    for finding in findings:
                        _apply(session, finding, verdict, counts, done, now=now, when=when, secret=secret,
                               domain=domain)
                    outbox.record_event(session, SEEN, now, detail=marker)
        except _TryLater:
            log.warning("a report from a trusted feedback loop is left for the next run: %s", verdict.reason)
            counts = {"deferred": 1}
        for name, value in counts.items():
            setattr(report, name, getattr(report, name) + value)
    return report


# "unsubscribe <token>", perhaps behind a client's "Re:" or "Fwd:"; the token as Tokens.unsubscribe makes it.
_UNSUBSCRIBE_SUBJECT = re.compile(r"^(?:\s*(?:re|fwd?|aw|wg)\s*:)*\s*unsubscribe\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\s*$",
                                  re.IGNORECASE)
MAILTO_SOURCE = "list-unsubscribe mailto"  # how the consent ledger names this way of leaving


def unsubscribe_token(message: Message) -> str | None:
    """The token of a mail sent by List-Unsubscribe's mailto: (its subject), else None."""
    subject = " ".join(str(message.get("Subject", "")).split())
    match = _UNSUBSCRIBE_SUBJECT.match(subject)
    return match.group(1) if match else None


def _unsubscribe_by_mail(sessions: sessionmaker[Session], token: str, marker: str, report: IngestReport, *,
                         now: datetime, secret: str) -> None:
    """Unsubscribe the person the token names, in one transaction with the marker; a token we did not
    sign is recorded as unverified and changes nobody."""
    try:
        subscriber_id = Tokens(secret).read_unsubscribe(token)
    except InvalidToken:
        subscriber_id = None
    with transaction(sessions) as session:
        if _seen(session, marker):
            report.duplicates += 1
            return
        if subscriber_id is None:
            outbox.record_event(session, UNVERIFIED, now,
                                detail="unsubscribe -: a mail to the unsubscribe address with a token we did not sign")
            report.unverified += 1
        elif unsubscribe(session, subscriber_id, scope="all", now=now, request=RequestInfo(None, None, MAILTO_SOURCE)):
            report.unsubscribed += 1
        else:
            report.ignored += 1  # already unsubscribed (or erased): nothing to change
        outbox.record_event(session, SEEN, now, detail=marker)


class _TryLater(Exception):
    """The report cannot be judged now; roll back and leave it for the next run."""


def _judge(raw: bytes, message: Message, trusted: Sequence[str], dnsfunc: DnsFunc | None) -> SenderVerdict:
    if not trusted:
        return SenderVerdict(False, "sender not a trusted feedback loop")
    try:
        return judge_sender(raw, message, trusted, dnsfunc=dnsfunc)
    except Exception as exc:  # noqa: BLE001 - a report we cannot judge is simply not trusted
        log.warning("could not judge a report's sender: %r", exc)
        return SenderVerdict(False, "sender could not be read")


def _apply(session: Session, finding: Finding, verdict: SenderVerdict, counts: dict[str, int], done: set[tuple], *,
           now: datetime, when: datetime, secret: str, domain: str) -> None:
    row, not_ours = _proven_row(session, finding, secret=secret, domain=domain)
    if row is None and verdict.temporary:
        raise _TryLater  # unread, unmarked: a DNS outage must not cost a genuine complaint
    if row is None and not verdict.trusted:
        _record_unverified(session, finding, f"{not_ours}; {verdict.reason}", counts, done, now=now)
        return
    # Our Message-ID says whom we sent it to; only a trusted feedback loop is believed on an address.
    subscriber = _locked(session, row.subscriber_id) if row is not None else _by_address(session, finding.address)
    outbox_id = row.id if row is not None else None
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
        mark_status(session, subscriber.id, new, now, outbox_id=outbox_id)
        counts["suppressed"] = counts.get("suppressed", 0) + 1


def _proven_row(session: Session, finding: Finding, *, secret: str, domain: str) -> tuple[OutboxMessage | None, str]:
    """The outbox row of the first Message-ID in the report that we provably sent; else None
    and, for people, why not."""
    why = "no Message-ID of ours"
    for candidate in finding.message_ids or ((finding.message_id,) if finding.message_id else ()):
        ref = outbox_ref(candidate)
        if ref is None or ref >= 2 ** 63:  # beyond any row id, and beyond what the databases take
            continue
        row = session.get(OutboxMessage, ref)
        if row is not None and is_our_message_id(candidate, row.id, row.key, secret=secret, domain=domain):
            return row, ""
        why = f"Message-ID {candidate} looks like ours but its digest fails"
    return None, why


def _by_address(session: Session, address: str | None) -> Subscriber | None:
    if not address:
        return None
    try:
        found = find_by_email(session, normalise_email(address))
    except InvalidInput:
        return None
    return _locked(session, found.id) if found is not None else None


def _record_unverified(session: Session, finding: Finding, reason: str, counts: dict[str, int], done: set[tuple],
                       *, now: datetime) -> None:
    """What an untrusted report claimed, for the operator to see; it changes nobody's status.

    Linked to the subscriber it names, if any, so that an erasure clears the address from it
    too. Dated when read, not by the report's Date, which the sender of a forgery chooses."""
    if ("unverified", finding.kind, finding.address) in done:
        return
    done.add(("unverified", finding.kind, finding.address))
    named = None
    if finding.address:
        try:
            named = find_by_email(session, normalise_email(finding.address))
        except InvalidInput:
            pass
    outbox.record_event(session, UNVERIFIED, now, subscriber_id=named.id if named is not None else None,
                        detail=f"{finding.kind} {finding.address or '-'}: {reason}")  # read by _unverified_report
    counts["unverified"] = counts.get("unverified", 0) + 1


@dataclass(frozen=True)
class UnverifiedReport:
    at: datetime
    claimed: str  # complaint, hard or soft; "" once erased
    address: str | None  # the address the report named; None if it named none, or after erasure
    reason: str  # why it was not believed


def recent_unverified(session: Session, limit: int = 5) -> tuple[list[UnverifiedReport], int]:
    """The latest unverified reports, newest first, and how many there are in all."""
    rows = session.execute(
        select(Event.created_at, Event.detail).where(Event.kind == UNVERIFIED)
        .order_by(Event.created_at.desc(), Event.id.desc()).limit(limit)
    ).all()
    total = session.scalar(select(func.count()).select_from(Event).where(Event.kind == UNVERIFIED)) or 0
    return [_unverified_report(at, detail) for at, detail in rows], total


def _unverified_report(at: datetime, detail: str | None) -> UnverifiedReport:
    if not detail:  # erased with the subscriber it named
        return UnverifiedReport(at, "", None, "details erased")
    head, _, reason = detail.partition(": ")
    claimed, _, address = head.partition(" ")
    return UnverifiedReport(at, claimed, None if address in ("", "-") else address, reason)


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


def _seen(session: Session, marker: str, *, lock: bool = True) -> bool:
    if lock and session.get_bind().dialect.name == "postgresql":
        # Two ingests of one mailbox at once: the second waits here, then sees the first's marker.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": int.from_bytes(bytes.fromhex(marker[:16]), "big", signed=True)})
    return session.scalar(select(Event.id).where(Event.kind == SEEN, Event.detail == marker).limit(1)) is not None

