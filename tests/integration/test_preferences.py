"""The preferences page through the real app and the real sender, on SQLite and PostgreSQL.

What the page shows and offers must match what the person will really get: checked here against
the sender's passes (a frozen clock), not against the page's own idea of the state.
"""

from __future__ import annotations

import email
import re
from datetime import datetime, timedelta, timezone
from email import policy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nurture.models import UNPLANNED, ConsentEvent, OutboxMessage, OutboxState, Status, Subscriber
from nurture.people.consent_ledger import CONSENT_VERSION, CONSENT_WORDINGS
from nurture.web import create_app

from factories import Clock, confirmed

# Monday 2026-11-02 15:00 UTC is 09:00 in Chicago: the send window is open.
START = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)



@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def client(runtime, clock):
    app = create_app(runtime, dispatch=False, clock=clock)
    with TestClient(app, client=("203.0.113.9", 4444), headers={"user-agent": "pytest-prefs/1.0"}) as test_client:
        yield test_client


def send(runtime, now) -> list[str]:
    """One sending pass at ``now``; the outbox keys it sent."""
    before = sent_keys(runtime)
    runtime.sender().run_pass(now)
    return [key for key in sent_keys(runtime) if key not in before]


def sent_keys(runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(session.scalars(select(OutboxMessage.key).where(OutboxMessage.state == OutboxState.sent)
                                    .order_by(OutboxMessage.id)))


def person(runtime, sid) -> Subscriber:
    with runtime.sessions() as session:
        return session.get(Subscriber, sid)


def text_of(response) -> str:
    """The page's visible words, one space apart."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.text, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()


def buttons(response) -> list[str]:
    return [re.sub(r"\s+", " ", b).strip() for b in re.findall(r"<button[^>]*>(.*?)</button>", response.text, re.S)]


def change(client, token, what):
    response = client.post(f"/preferences/{token}", data={"change": what}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/preferences/{token}?done={what}"
    return client.get(response.headers["location"])


def test_stop_the_series_then_the_newsletter_then_turn_the_series_back_on(client, runtime, clock):
    sid = confirmed(runtime.sessions, "pat@example.com", START)
    assert send(runtime, START) == ["seq:nurture:welcome-history"]
    token = runtime.tokens.unsubscribe(sid)

    page = client.get(f"/preferences/{token}")
    assert "Your email preferences" in page.text
    assert "On. 1 of 4 emails sent so far" in text_of(page)
    assert buttons(page) == ["Stop the series, keep the newsletter", "Stop the newsletter, keep the series",
                             "Stop everything"]

    page = change(client, token, "stop-series")
    assert "Saved. The series is stopped. You still get the newsletter." in text_of(page)
    assert "Stopped. 1 of 4 emails were sent before it stopped." in text_of(page)
    # The false offer of the old page ("keep the series") is gone; turning it back on is offered.
    assert buttons(page) == ["Stop the newsletter", "Turn the series back on"]

    page = change(client, token, "stop-newsletter")
    assert "Saved. The newsletter is stopped. You will not receive any more emails from us." in text_of(page)
    assert "The rest of the series still comes" not in page.text
    assert buttons(page) == ["Turn the series back on", "Turn the newsletter back on"]
    assert person(runtime, sid).status is Status.unsubscribed
    assert send(runtime, START + 2 * DAY) == []  # the page told the truth: nothing comes

    clock.now = START + 3 * DAY
    page = change(client, token, "resume-series")
    assert "Saved. The series is back on." in text_of(page)
    assert buttons(page) == ["Stop the series", "Turn the newsletter back on"]
    subscriber = person(runtime, sid)
    assert (subscriber.status, subscriber.wants_series, subscriber.wants_newsletter) == (Status.confirmed, True, False)
    assert subscriber.next_due_at == UNPLANNED  # planned again at the next pass
    with runtime.sessions() as session:
        ledger = session.scalars(select(ConsentEvent).where(ConsentEvent.subscriber_id == sid)
                                 .order_by(ConsentEvent.id)).all()
    # Stopping the newsletter left nothing coming, so it withdrew everything.
    assert [(e.kind, e.scope) for e in ledger] == [("signup", "all"), ("confirm", "all"), ("withdraw", "series"),
                                                   ("withdraw", "all"), ("resume", "series")]
    resume = ledger[-1]
    assert (resume.ip, resume.user_agent, resume.source) == ("203.0.113.9", "pytest-prefs/1.0", "preferences-page")
    assert (resume.wording, resume.wording_version) == (CONSENT_WORDINGS[CONSENT_VERSION], CONSENT_VERSION)

    # The remaining steps follow, one a day, in the window, and then the series is finished.
    assert send(runtime, START + 3 * DAY) == ["seq:nurture:how-it-may-work"]
    assert send(runtime, START + 3 * DAY + timedelta(hours=2)) == []
    assert send(runtime, START + 4 * DAY) == []  # its own day (confirmation + 5) has not come
    assert send(runtime, START + 5 * DAY) == ["seq:nurture:risks-side-effects"]
    assert send(runtime, START + 8 * DAY) == ["seq:nurture:consultation-invite"]
    # They clicked nothing in it, so the reminder (an extra, not one of the 4) comes three days later.
    assert send(runtime, START + 11 * DAY) == ["seq:nurture:invite-reminder"]
    page = client.get(f"/preferences/{token}")
    assert "Finished. You have had all 4 emails." in text_of(page)
    assert "Saved" not in page.text  # the page says it saved something only right after the change
    assert buttons(page) == ["Turn the newsletter back on"]


def test_a_person_whose_series_is_finished_is_offered_only_the_newsletter(client, runtime):
    sid = confirmed(runtime.sessions, "fin@example.com", START)
    for day in (0, 2, 5, 8, 11):
        send(runtime, START + day * DAY)
    assert len(sent_keys(runtime)) == 5  # the four, and the reminder (they clicked nothing)
    token = runtime.tokens.unsubscribe(sid)

    page = client.get(f"/preferences/{token}")
    assert "Finished. You have had all 4 emails." in text_of(page)
    assert buttons(page) == ["Stop the newsletter"]
    page = change(client, token, "stop-newsletter")
    assert "Saved. The newsletter is stopped. You will not receive any more emails from us." in text_of(page)
    assert "series still comes" not in page.text
    assert buttons(page) == ["Turn the newsletter back on"]  # no series to resume: nothing is left of it

    page = change(client, token, "resume-newsletter")
    assert "Saved. The newsletter is back on." in text_of(page)
    assert person(runtime, sid).status is Status.confirmed and person(runtime, sid).wants_newsletter


def test_stopping_the_newsletter_keeps_the_series_and_says_so(client, runtime):
    sid = confirmed(runtime.sessions, "nl@example.com", START)
    send(runtime, START)
    token = runtime.tokens.unsubscribe(sid)
    page = change(client, token, "stop-newsletter")
    assert "Saved. The newsletter is stopped. The rest of the series still comes." in text_of(page)
    assert send(runtime, START + 2 * DAY) == ["seq:nurture:how-it-may-work"]  # and it does


def test_a_change_the_page_no_longer_offers_changes_nothing(client, runtime):
    sid = confirmed(runtime.sessions, "twice@example.com", START)
    token = runtime.tokens.unsubscribe(sid)
    change(client, token, "stop-all")
    page = change(client, token, "stop-newsletter")  # a stale page, or a second click: no new row
    assert "You will not receive any more emails from us." in text_of(page)  # still true
    page = change(client, token, "resume-series")
    with runtime.sessions() as session:
        kinds = session.scalars(select(ConsentEvent.kind).where(ConsentEvent.subscriber_id == sid)).all()
    assert kinds == ["signup", "confirm", "withdraw", "resume"]
    page = change(client, token, "resume-series")  # again: nothing more
    with runtime.sessions() as session:
        assert session.scalars(select(ConsentEvent.kind).where(ConsentEvent.subscriber_id == sid)).all() == kinds
    assert client.post(f"/preferences/{token}", data={"change": "everything"}).status_code == 422


def test_pending_bounced_and_unknown_people_get_true_pages_and_no_resume(client, runtime):
    response = client.post("/subscribe", json={"email": "new@example.com", "consent": True})
    assert response.status_code == 202
    with runtime.sessions() as session:
        pending = session.scalars(select(Subscriber.id)).one()
    page = client.get(f"/preferences/{runtime.tokens.unsubscribe(pending)}")
    assert "You have not confirmed your subscription yet, so we send you nothing." in text_of(page)
    assert buttons(page) == ["Cancel my signup"]
    page = change(client, runtime.tokens.unsubscribe(pending), "stop-all")
    assert "You stopped before confirming." in text_of(page)
    assert buttons(page) == []  # an unconfirmed address comes back only through the double opt-in

    sid = confirmed(runtime.sessions, "gone@example.com", START)
    with runtime.sessions.begin() as session:
        session.get(Subscriber, sid).status = Status.bounced
    page = client.get(f"/preferences/{runtime.tokens.unsubscribe(sid)}")
    assert "your mail server returned our emails" in text_of(page) and buttons(page) == []
    assert client.post(f"/preferences/{runtime.tokens.unsubscribe(sid)}",
                       data={"change": "resume-series"}).status_code == 200
    assert person(runtime, sid).status is Status.bounced

    page = client.get(f"/preferences/{runtime.tokens.unsubscribe(99999)}")
    assert page.status_code == 200 and "We hold no subscription for this link" in page.text
    assert client.get("/preferences/forged-token").status_code == 404


def test_the_unsubscribe_page_still_stops_everything_and_partial_scopes_land_on_the_truth(client, runtime):
    sid = confirmed(runtime.sessions, "old@example.com", START)
    send(runtime, START)
    token = runtime.tokens.unsubscribe(sid)
    page = client.get(f"/unsubscribe/{token}")
    assert "Stop these emails?" in page.text and buttons(page) == ["Stop everything"]
    assert f'href="/preferences/{token}"' in page.text
    # A form of the old page (scope=newsletter) still works, and the answer reads the state.
    page = client.post(f"/unsubscribe/{token}", data={"scope": "newsletter"})
    assert "The newsletter is stopped. The rest of the series still comes." in text_of(page)
    page = client.post(f"/unsubscribe/{token}", data={"scope": "series"})
    assert "The series is stopped. You will not receive any more emails from us." in text_of(page)
    # RFC 8058 one-click, as before: a plain 200.
    one_click = client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert (one_click.status_code, one_click.text) == (200, "Unsubscribed.")


def test_the_emails_preferences_link_opens_the_preferences_page(client, runtime, memory_transport):
    sid = confirmed(runtime.sessions, "link@example.com", START)
    send(runtime, START)
    [welcome] = [email.message_from_bytes(data, policy=policy.default) for _, _, data in memory_transport.sent]
    html = welcome.get_body(("html",)).get_content()
    [url] = re.findall(r'href="(http://127\.0\.0\.1:8000/preferences/[^"#]+)"[^>]*>Email preferences', html)
    assert url.endswith(runtime.tokens.unsubscribe(sid)) and "#" not in url
    page = client.get(url.removeprefix("http://127.0.0.1:8000"))
    assert "<h1>Your email preferences</h1>" in page.text

