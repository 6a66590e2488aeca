"""What the signup form tells a person, through the real app: the typed address echoed on the result
page (never in a URL, never depending on the database), a suggestion for a mistyped domain, the
consent box kept after an error, a true "send it again", and no second signup on reload."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nurture.config import ConfigError
from nurture.db import transaction
from nurture.models import OutboxMessage, Subscriber
from nurture.people.consent_ledger import RequestInfo
from nurture.people.subscribers import unsubscribe
from nurture.web import create_app
from nurture.web.signup_echo import COOKIE

from factories import Clock, confirmed

START = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
FORM = {"consent": "yes", "timezone": "America/New_York", "first_name": "Sam"}



@pytest.fixture
def clock():
    return Clock(START)


def make_client(runtime, clock) -> TestClient:
    return TestClient(create_app(runtime, dispatch=False, clock=clock), client=("198.51.100.4", 1234))


@pytest.fixture
def client(runtime, clock):
    with make_client(runtime, clock) as test_client:
        yield test_client


def words(response) -> str:
    """The page's HTML with each run of white space as one space, to find sentences that wrap."""
    return re.sub(r"\s+", " ", response.text)


def confirmations(runtime, address: str) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage).join(Subscriber).where(
            Subscriber.email == address, OutboxMessage.key.startswith("sys:confirm:")))


def test_the_form_redirects_to_a_result_page_that_echoes_the_address_without_putting_it_in_the_url(client, runtime):
    response = client.post("/subscribe", data={"email": "Sam@Example.com", **FORM}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/check-inbox")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "sam@example.com" not in cookie.lower()  # signed and encoded, not the address in clear

    page = client.get("/check-inbox")
    assert page.status_code == 200
    assert '<strong class="address">sam@example.com</strong>' in page.text
    assert 'href="/?correct"' in page.text
    # A reload is a GET: it signs up nobody again.
    client.get("/check-inbox")
    assert confirmations(runtime, "sam@example.com") == 1

    # "Correct it" brings the form back as it was sent, consent included.
    form = client.get("/?correct")
    assert 'value="sam@example.com"' in form.text and 'value="Sam"' in form.text
    assert re.search(r'id="consent"[^>]*checked', form.text)


def test_the_result_page_is_the_same_whatever_the_database_holds(runtime, clock):
    confirmed(runtime.sessions, "subscribed@example.com", START - timedelta(days=3))
    left = confirmed(runtime.sessions, "left@example.com", START - timedelta(days=3))
    with transaction(runtime.sessions) as session:
        unsubscribe(session, left, now=START - timedelta(days=1), request=RequestInfo(None, None, "tests"))
    pages = {}
    for address in ("new@example.com", "subscribed@example.com", "left@example.com"):
        with make_client(runtime, clock) as fresh:  # a browser of its own each
            fresh.post("/subscribe", data={"email": address, **FORM})  # pending now, if it was new
            again = fresh.post("/subscribe", data={"email": address, **FORM})
            pages[address] = again.text.replace(address, "ADDRESS")
    assert len(set(pages.values())) == 1


def test_without_the_cookie_the_result_page_still_helps_and_a_forged_one_is_ignored(client):
    page = client.get("/check-inbox")
    assert "If the address you gave can receive our emails" in words(page)
    assert "at most one link every 10 minutes" in words(page)
    client.cookies.set(COOKIE, "forged.value")
    assert "If the address you gave" in words(client.get("/check-inbox"))


def test_send_it_again_says_when_and_sends_within_the_limits(client, runtime, clock):
    client.post("/subscribe", data={"email": "again@example.com", **FORM})
    page = client.get("/check-inbox")
    # 15:10 UTC in the person's own zone (America/New_York): 10:10 AM.
    assert "You can ask for a new link from 10:10 AM." in words(page)
    assert "at most one link every 10 minutes and 3 in a day" in words(page)

    clock.now = START + timedelta(minutes=4)
    early = client.post("/check-inbox/resend")
    assert "It is too soon for another link. You can ask again from 10:10 AM." in words(early)
    assert confirmations(runtime, "again@example.com") == 1

    clock.now = START + timedelta(minutes=11)
    resent = client.post("/check-inbox/resend")
    assert "A new link was requested." in words(resent) and "from 10:21 AM" in words(resent)
    assert confirmations(runtime, "again@example.com") == 2

    clock.now = START + timedelta(minutes=22)
    client.post("/check-inbox/resend")
    assert confirmations(runtime, "again@example.com") == 3
    page = client.get("/check-inbox")
    assert "You have asked for 3 links today, the most we send to one address in a day" in words(page)
    assert "Send me a new link" not in page.text
    clock.now = START + timedelta(minutes=40)
    client.post("/check-inbox/resend")
    assert confirmations(runtime, "again@example.com") == 3


def test_a_likely_domain_typo_is_offered_a_fix_before_anything_is_stored(client, runtime):
    page = client.post("/subscribe", data={"email": "kim@gmail.con", **FORM})
    assert page.status_code == 200 and "Did you mean" in words(page)
    assert 'name="use_email" value="kim@gmail.com"' in page.text
    assert 'name="keep_email" value="kim@gmail.con"' in page.text
    assert re.search(r'id="consent"[^>]*checked', page.text)
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0

    done = client.post("/subscribe", data={"email": "kim@gmail.con", "use_email": "kim@gmail.com", **FORM})
    assert "kim@gmail.com" in done.text and "Check your inbox" in done.text
    assert confirmations(runtime, "kim@gmail.com") == 1

    kept = client.post("/subscribe", data={"email": "lee@gmail.con", "keep_email": "lee@gmail.con", **FORM})
    assert "Check your inbox" in kept.text and confirmations(runtime, "lee@gmail.con") == 1
    # A "use" value that is not the suggestion for what was typed is not taken.
    odd = client.post("/subscribe", data={"email": "ray@gmail.con", "use_email": "ray@evil.example", **FORM})
    assert "Did you mean" in odd.text


def test_the_consent_box_stays_ticked_after_an_error_in_another_field(client):
    page = client.post("/subscribe", data={"email": "not an address", **FORM})
    assert page.status_code == 422
    assert re.search(r'id="consent"[^>]*checked', page.text)
    unticked = client.post("/subscribe", data={"email": "not an address", "consent": "", "timezone": ""})
    assert not re.search(r'id="consent"[^>]*checked', unticked.text)


def test_the_privacy_notice_is_linked_from_the_signup_page_and_names_the_clinics_policy(tmp_path, database_url):
    from nurture.runtime import Runtime

    from conftest import make_settings

    settings = make_settings(tmp_path, database_url, privacy_policy_url="https://clinic.example/privacy")
    runtime = Runtime(settings)
    try:
        with TestClient(create_app(runtime, dispatch=False)) as client:
            assert 'href="/privacy"' in client.get("/").text
            notice = client.get("/privacy")
            assert notice.status_code == 200
            for needle in ("What we store", "IP", "time zone", "clicked", "For how long", "erase",
                           'href="https://clinic.example/privacy"'):
                assert needle in notice.text
    finally:
        runtime.close()
    # Only a web address can be a link there.
    with pytest.raises(ConfigError, match="NURTURE_PRIVACY_POLICY_URL: must be an http"):
        make_settings(tmp_path, database_url, privacy_policy_url="javascript:alert(1)")
