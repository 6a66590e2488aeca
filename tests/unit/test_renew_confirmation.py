"""subscribers.renew_confirmation: an expired confirmation link is a new signup with the address
it was sent to, under the usual pause and daily cap."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from nurture.db import transaction
from nurture.models import ConsentEvent, OutboxMessage
from nurture.people import data_rights, subscribers
from nurture.people.consent_ledger import RequestInfo
from nurture.people.subscribers import RESEND_AFTER
from nurture.people.validation import Signup

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
FORM = RequestInfo("203.0.113.9", "browser", "signup-form")
RENEW = RequestInfo("203.0.113.9", "browser", "renew-link")


@pytest.fixture
def runtime(sqlite_runtime):
    return sqlite_runtime


def signed_up(runtime) -> int:
    with transaction(runtime.sessions) as session:
        return subscribers.subscribe(session, Signup("reader@example.com", "Ann", "Europe/Paris", "v1", False),
                                     now=T0, request=FORM, default_timezone="UTC",
                                     confirmations_per_day=3).subscriber_id


def renew(runtime, person, now, per_day=3):
    with transaction(runtime.sessions) as session:
        return subscribers.renew_confirmation(session, person, now=now, request=RENEW, default_timezone="UTC",
                                              confirmations_per_day=per_day)


def keys(runtime):
    with runtime.sessions() as session:
        return sorted(session.scalars(select(OutboxMessage.key)))


def test_a_renewal_queues_the_next_round_for_the_same_address(runtime):
    person = signed_up(runtime)
    signup, queued = renew(runtime, person, T0 + timedelta(days=4))
    assert queued and signup == Signup("reader@example.com", "Ann", "Europe/Paris", None, False)
    assert keys(runtime) == ["sys:confirm:1", "sys:confirm:2"]
    with runtime.sessions() as session:
        sources = [e.source for e in session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]
    assert sources == ["signup-form", "renew-link"]


def test_the_pause_and_the_daily_cap_still_hold(runtime):
    person = signed_up(runtime)
    signup, queued = renew(runtime, person, T0 + RESEND_AFTER / 2)
    assert signup is not None and not queued and keys(runtime) == ["sys:confirm:1"]
    _signup, queued = renew(runtime, person, T0 + RESEND_AFTER, per_day=1)
    assert not queued and keys(runtime) == ["sys:confirm:1"]


def test_nobody_to_renew_after_an_erasure(runtime):
    person = signed_up(runtime)
    with transaction(runtime.sessions) as session:
        data_rights.erase(session, "reader@example.com", now=T0 + timedelta(hours=1))
    assert renew(runtime, person, T0 + timedelta(days=4)) == (None, False)
    assert renew(runtime, person + 99, T0 + timedelta(days=4)) == (None, False)
