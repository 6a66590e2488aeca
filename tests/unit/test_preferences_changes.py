"""The preferences page's rules (nurture.preferences): who can still unsubscribe, the state the
page shows, and that only a change the page could offer now is made."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from nurture.db import transaction
from nurture.people import data_rights
from nurture.people.consent_ledger import RequestInfo
from nurture.people.new_subscribers import add_confirmed
from nurture.people.preferences import Change, Series, change_preferences, may_unsubscribe, preferences_of_id
from nurture.people.validation import Signup
from nurture.sending.journey import Planner

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
PAGE = RequestInfo(None, None, "preferences-page")


@pytest.fixture
def runtime(sqlite_runtime):
    return sqlite_runtime


@pytest.fixture
def person(runtime):
    with transaction(runtime.sessions) as session:
        [person] = add_confirmed(session, [Signup("a@example.com", None, None, None, False)], now=T0,
                                 source="paper", default_timezone="UTC")
    return person


def change(runtime, person, what: Change, minutes: int) -> bool:
    sequence = Planner.from_settings(runtime.settings).sequence()
    with transaction(runtime.sessions) as session:
        return change_preferences(session, person, what, sequence, now=T0 + timedelta(minutes=minutes), request=PAGE)


def state(runtime, person):
    with runtime.sessions() as session:
        return preferences_of_id(session, person, Planner.from_settings(runtime.settings).sequence())


def test_only_a_change_on_offer_is_made_and_a_second_click_changes_nothing(runtime, person):
    assert state(runtime, person).changes == (Change.stop_series, Change.stop_newsletter, Change.stop_all)
    assert not change(runtime, person, Change.resume_series, 1)  # not on offer: the series is running
    assert change(runtime, person, Change.stop_series, 2)
    assert not change(runtime, person, Change.stop_series, 3)
    now = state(runtime, person)
    assert (now.series, now.newsletter, now.changes) == (Series.stopped, True,
                                                         (Change.stop_newsletter, Change.resume_series))
    assert change(runtime, person, Change.resume_series, 4)
    assert state(runtime, person).series is Series.active


def test_stopping_the_last_thing_coming_withdraws_everything(runtime, person):
    assert change(runtime, person, Change.stop_series, 1)
    assert change(runtime, person, Change.stop_newsletter, 2)
    assert state(runtime, person).status.value == "unsubscribed"
    with runtime.sessions() as session:
        assert not may_unsubscribe(session, person)


def test_nobody_to_show_or_unsubscribe_once_erased_or_unknown(runtime, person):
    with runtime.sessions() as session:
        assert may_unsubscribe(session, person) and not may_unsubscribe(session, person + 1)
    with transaction(runtime.sessions) as session:
        data_rights.erase(session, "a@example.com", now=T0)
    assert state(runtime, person) is None and state(runtime, person + 1) is None
    assert not change(runtime, person, Change.stop_all, 5)
