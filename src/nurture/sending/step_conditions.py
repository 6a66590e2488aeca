"""Behaviour-aware steps: whether a step whose front matter has a condition goes to a person.

The vocabulary is in :mod:`nurture.content.sequences` (``skip_if: clicked:consultation``,
``skip_if: clicked:<step-key>``, ``only_if: not_clicked:<step-key>``). The planner asks
:func:`skip_reason` when such a step falls due, with what the person did up to then
(:func:`load_behaviour`: their recorded clicks and the sequence emails sent to them).

An extra (a step with a condition) also goes only to people whose consent wording mentions a
reminder (:func:`consented_to_extras`): the wording someone agreed to is a promise ("four emails
over about a week"), and a reminder is an email it did not count.

A skipped step is recorded as an outbox row that was never sent: state ``suppressed``, its reason
in ``last_error`` starting with ``skipped: `` (:data:`SKIPPED`). So the planner counts the step as
passed and never considers it again, it holds no day (only sent or waiting rows do), ``explain``
shows it with its reason, and the funnel does not count it as still to come.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from nurture.content.sequences import Step
from nurture.db import insert_or_not
from nurture.message_key import SEQUENCE_PREFIX, MessageKey
from nurture.models import ConsentEvent, Event, OutboxMessage, OutboxState

__all__ = ["SKIPPED", "Behaviour", "consented_to_extras", "is_skipped", "load_behaviour", "not_skipped", "record_skips", "skip_reason",
           "skipped_rows"]

#: How the reason of a skipped step's outbox row starts.
SKIPPED = "skipped: "


@dataclass
class Behaviour:
    """What one person did, as far as conditions ask: the URLs they clicked (any email), the
    outbox keys of the emails they clicked a link in, and the sequence keys sent to them."""

    clicked_urls: set[str] = field(default_factory=set)
    clicked_keys: set[str] = field(default_factory=set)
    sent_keys: set[str] = field(default_factory=set)
    consent_version: str | None = None  # of the last wording they agreed to
    extras_consented: bool = False  # that wording mentions a reminder


def load_behaviour(session: Session, ids: list[int], now: datetime) -> dict[int, Behaviour]:
    """The behaviour of these subscribers up to ``now``: two queries, over their own rows."""
    found: dict[int, Behaviour] = defaultdict(Behaviour)
    if not ids:
        return found
    clicks = (select(Event.subscriber_id, Event.detail, OutboxMessage.key)
              .outerjoin(OutboxMessage, OutboxMessage.id == Event.outbox_id)
              .where(Event.kind == "clicked", Event.subscriber_id.in_(ids), Event.created_at <= now))
    for sid, url, key in session.execute(clicks):
        if url:
            found[sid].clicked_urls.add(url)
        if key:
            found[sid].clicked_keys.add(key)
    sent = select(OutboxMessage.subscriber_id, OutboxMessage.key).where(
        OutboxMessage.subscriber_id.in_(ids), OutboxMessage.key.startswith(SEQUENCE_PREFIX),
        OutboxMessage.state == OutboxState.sent)
    for sid, key in session.execute(sent):
        found[sid].sent_keys.add(key)
    agreed = (select(ConsentEvent.subscriber_id, ConsentEvent.wording_version, ConsentEvent.wording)
              .where(ConsentEvent.subscriber_id.in_(ids), ConsentEvent.wording.is_not(None),
                     ConsentEvent.created_at <= now)
              .order_by(ConsentEvent.created_at, ConsentEvent.id))
    for sid, version, wording in session.execute(agreed):  # the last one wins
        found[sid].consent_version, found[sid].extras_consented = version, consented_to_extras(wording)
    return found


def consented_to_extras(wording: str | None) -> bool:
    """Does this consent wording announce a reminder beyond the numbered emails? Read from the words
    the person saw (the ledger keeps them), not from a list of versions to keep up to date."""
    return wording is not None and "reminder" in wording.lower()


def skip_reason(step: Step, behaviour: Behaviour, *, consultation_url: str) -> str | None:
    """Why ``step`` is skipped for a person who did ``behaviour`` (``skipped: ...``), or None
    when it goes. Every condition of the step must let it go."""
    for condition in step.conditions:
        target = condition.step_key
        if target is None:  # skip_if: clicked:consultation
            if consultation_url and consultation_url in behaviour.clicked_urls:
                return f"{SKIPPED}clicked the consultation link"
            continue
        key = str(MessageKey.sequence_step(step.sequence, target))
        if condition.test == "clicked" and key in behaviour.clicked_keys:
            return f"{SKIPPED}clicked a link in {target}"
        if condition.test == "not_clicked":
            if key not in behaviour.sent_keys:
                return f"{SKIPPED}{target} was not sent to them"
            if key in behaviour.clicked_keys:
                return f"{SKIPPED}clicked a link in {target}"
    if step.is_extra and not behaviour.extras_consented:
        return f"{SKIPPED}the wording they agreed to ({behaviour.consent_version or 'none recorded'}) promised no reminder"
    return None


def record_skips(session: Session, rows: list[dict], *, now: datetime) -> None:
    """Record skipped steps (``subscriber_id``, ``key``, ``template``, ``reason``): rows never sent."""
    if not rows:
        return
    values = [dict(subscriber_id=row["subscriber_id"], key=row["key"], template=row["template"], due_at=now,
                   created_at=now, state=OutboxState.suppressed, attempts=0, unknowns=0, track_opens=False,
                   last_error=row["reason"]) for row in rows]
    session.execute(insert_or_not(session, OutboxMessage)
                    .on_conflict_do_nothing(index_elements=["subscriber_id", "key"]), values)


def skipped_rows():
    """A SQL condition: the outbox rows that are skipped steps."""
    return and_(OutboxMessage.state == OutboxState.suppressed, OutboxMessage.last_error.startswith(SKIPPED))


def is_skipped(state: OutboxState | str, reason: str | None) -> bool:
    """Is an outbox row (its state and reason) a skipped step?"""
    return str(getattr(state, "value", state)) == "suppressed" and (reason or "").startswith(SKIPPED)


def not_skipped():
    """A SQL condition: the outbox rows that are not skipped steps (NULL-safe, unlike ``~skipped_rows()``)."""
    return ~func.coalesce(OutboxMessage.last_error, "").startswith(SKIPPED)
