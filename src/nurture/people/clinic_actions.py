"""What the clinic does for a person from the dashboard (someone phones): unsubscribe them, or
send their confirmation email again. The rules are the subscribers module's; this names the
outcome, so the page can say what happened."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from nurture.models import Status
from nurture.people import subscribers
from nurture.people.address_hashes import find_by_email
from nurture.people.consent_ledger import RequestInfo

ACTIONS = ("unsubscribe", "resend-confirmation")


def act(session: Session, kind: str, email: str, *, now: datetime, who: RequestInfo,
        confirmations_per_day: int) -> str:
    """Do one action (one of ACTIONS) for the person with this normalised address; what came of
    it: unknown, unsubscribed, not-subscribed, not-pending, resent or capped."""
    if kind not in ACTIONS:
        raise ValueError(f"unknown action {kind!r}")
    person = find_by_email(session, email)
    if person is None:
        return "unknown"
    if kind == "unsubscribe":
        changed = subscribers.unsubscribe(session, person.id, scope="all", now=now, request=who)
        return "unsubscribed" if changed else "not-subscribed"
    if person.status is not Status.pending:
        return "not-pending"
    queued = subscribers.resend_confirmation(session, person.id, now=now, request=who,
                                             confirmations_per_day=confirmations_per_day)
    return "resent" if queued else "capped"
