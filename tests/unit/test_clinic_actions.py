"""clinic_actions.act: what the dashboard does for a person who phones, and what it says came of it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from nurture.db import transaction
from nurture.people import subscribers
from nurture.people.clinic_actions import act
from nurture.people.consent_ledger import RequestInfo
from nurture.people.new_subscribers import add_confirmed
from nurture.people.validation import Signup

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ADMIN = RequestInfo(None, None, "admin:admin")


@pytest.fixture
def runtime(sqlite_runtime):
    return sqlite_runtime


def do(runtime, kind, email, now=T0 + timedelta(hours=1), per_day=3):
    with transaction(runtime.sessions) as session:
        return act(session, kind, email, now=now, who=ADMIN, confirmations_per_day=per_day)


def test_unsubscribing_says_whether_there_was_anything_to_stop(runtime):
    with transaction(runtime.sessions) as session:
        add_confirmed(session, [Signup("a@example.com", None, None, None, False)], now=T0, source="paper",
                      default_timezone="UTC")
    assert do(runtime, "unsubscribe", "a@example.com") == "unsubscribed"
    assert do(runtime, "unsubscribe", "a@example.com") == "not-subscribed"
    assert do(runtime, "unsubscribe", "nobody@example.com") == "unknown"
    assert do(runtime, "resend-confirmation", "a@example.com") == "not-pending"


def test_a_resend_goes_only_to_someone_pending_and_within_the_daily_cap(runtime):
    with transaction(runtime.sessions) as session:
        subscribers.subscribe(session, Signup("p@example.com", None, None, None, False), now=T0,
                              request=RequestInfo(None, None, "signup-form"), default_timezone="UTC",
                              confirmations_per_day=3)
    assert do(runtime, "resend-confirmation", "p@example.com", now=T0 + timedelta(minutes=1)) == "resent"
    assert do(runtime, "resend-confirmation", "p@example.com", now=T0 + timedelta(minutes=2), per_day=2) == "capped"
    with pytest.raises(ValueError):
        do(runtime, "erase", "p@example.com")
