"""What a person receives now, and the changes their preferences page may offer them.

The page must never say something false (the old one offered "stop the newsletter, keep the
series" to someone whose series was already stopped), so everything it shows and offers comes
from here: the stored state, and for the series whether any step is still to come.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.content.sequences import Sequence
from nurture.message_key import SEQUENCE_PREFIX
from nurture.models import OutboxMessage, OutboxState, Status, Subscriber
from nurture.people.consent_ledger import RequestInfo
from nurture.people.goals import reached_goal
from nurture.people.subscribers import may_resume, resume, unsubscribe
from nurture.sending.journey import key_of, next_step
from nurture.sending.step_conditions import is_skipped


class Series(enum.Enum):
    waiting = "waiting"  # not confirmed yet: nothing is sent
    active = "active"  # steps still to come
    finished = "finished"  # every step has gone
    stopped = "stopped"  # the person (or a bounce, a complaint) stopped it with steps left


class Change(enum.Enum):
    """What the page can do, as the value of its buttons."""

    stop_all = "stop-all"
    stop_series = "stop-series"
    stop_newsletter = "stop-newsletter"
    resume_series = "resume-series"
    resume_newsletter = "resume-newsletter"


# Changes and the subscribers functions (and scopes) that make them.
STOPS = {Change.stop_all: "all", Change.stop_series: "series", Change.stop_newsletter: "newsletter"}
RESUMES = {Change.resume_series: "series", Change.resume_newsletter: "newsletter"}

_UNSENT = (OutboxState.suppressed,)  # cancelled by a stop: not had, and forgotten on resume
_OPEN = (OutboxState.queued, OutboxState.sending, OutboxState.retry, OutboxState.unknown)


@dataclass(frozen=True)
class Preferences:
    status: Status
    series: Series
    newsletter: bool
    steps_sent: int
    steps_total: int | None  # None: the sequence cannot be read right now
    changes: tuple[Change, ...]
    booked: bool = False  # they booked a consultation, which ended the series

    @property
    def receives_anything(self) -> bool:
        return self.series is Series.active or self.newsletter

    def agrees_with(self, change: Change) -> bool:
        """Is ``change`` what the state now shows (so the page may say it was done)?"""
        return {
            Change.stop_all: not self.receives_anything,
            Change.stop_series: self.series is not Series.active,
            Change.stop_newsletter: not self.newsletter,
            Change.resume_series: self.series in (Series.active, Series.finished),
            Change.resume_newsletter: self.newsletter,
        }[change]


def withdrawal_scope(state: Preferences, change: Change) -> str:
    """The unsubscribe scope for a stop: everything, when the stop leaves nothing coming (say the
    newsletter of someone whose series is finished), so a step marketing adds later cannot reach a
    person the page told "you will not receive any more emails"."""
    left = {Change.stop_series: state.newsletter, Change.stop_newsletter: state.series is Series.active,
            Change.stop_all: False}[change]
    return STOPS[change] if left else "all"


def preferences_of(session: Session, subscriber: Subscriber, sequence: Sequence | None) -> Preferences:
    """The person's state, and only the changes that would change something for them."""
    rows = session.execute(select(OutboxMessage.key, OutboxMessage.state, OutboxMessage.last_error).where(
        OutboxMessage.subscriber_id == subscriber.id, OutboxMessage.key.startswith(SEQUENCE_PREFIX))).all()
    # A step skipped by its condition counts as passed (it never comes), not as cancelled by a stop.
    had = {key for key, state, reason in rows if state not in _UNSENT or is_skipped(state, reason)}
    in_flight = any(state in _OPEN for _key, state, _reason in rows)
    sent_keys = {key for key, state, _reason in rows if state is OutboxState.sent}
    if sequence is None:
        steps_left, total, sent = True, None, len(sent_keys)
    else:
        steps_left = in_flight or next_step(sequence, had) is not None
        # The numbered emails: a conditional reminder is not one of them.
        total, sent = len(sequence.series), sum(key_of(step) in sent_keys for step in sequence.series)
    # Booking a consultation ends the series (people.goals): it is over, not stopped, and not resumable.
    booked = reached_goal(session, subscriber.id) is not None
    steps_left = steps_left and not booked

    status = subscriber.status
    confirmed = status is Status.confirmed
    if status is Status.pending:
        series = Series.waiting
    elif not steps_left:
        series = Series.finished
    elif confirmed and subscriber.wants_series:
        series = Series.active
    else:
        series = Series.stopped
    newsletter = confirmed and subscriber.wants_newsletter

    changes: list[Change] = []
    if status is Status.pending:
        changes.append(Change.stop_all)  # cancel the signup before it is confirmed
    elif confirmed:
        if series is Series.active and newsletter:
            changes += [Change.stop_series, Change.stop_newsletter, Change.stop_all]
        elif series is Series.active:
            changes.append(Change.stop_series)
        elif newsletter:
            changes.append(Change.stop_newsletter)
    if may_resume(subscriber):
        if series is Series.stopped:
            changes.append(Change.resume_series)
        if not newsletter:
            changes.append(Change.resume_newsletter)
    return Preferences(status, series, newsletter, sent, total, tuple(changes), booked)


def may_unsubscribe(session: Session, subscriber_id: int) -> bool:
    """Whether an unsubscribe link would still change anything: the person is pending or
    confirmed (not gone, unsubscribed, bounced, complained or erased)."""
    subscriber = session.get(Subscriber, subscriber_id)
    return subscriber is not None and subscriber.status in (Status.pending, Status.confirmed)


def preferences_of_id(session: Session, subscriber_id: int, sequence: Sequence | None) -> Preferences | None:
    """``preferences_of`` the person with this id; None when there is nobody (left) to show."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status is Status.erased:
        return None
    return preferences_of(session, subscriber, sequence)


def change_preferences(
    session: Session, subscriber_id: int, change: Change, sequence: Sequence | None, *, now: datetime,
    request: RequestInfo,
) -> bool:
    """Make ``change`` if the page could offer it now (a stale page or a second click changes
    nothing); returns whether it was made. Locks the person's row while deciding."""
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    state = preferences_of(session, subscriber, sequence) if subscriber is not None else None
    if state is None or change not in state.changes:
        return False
    if change in STOPS:
        unsubscribe(session, subscriber_id, scope=withdrawal_scope(state, change), now=now, request=request)
    else:
        resume(session, subscriber_id, scope=RESUMES[change], now=now, request=request)
    return True
