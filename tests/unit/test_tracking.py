"""Click and open tracking (nurture.tracking): rewriting a message's links, reading the tokens,
and where a click lands and what it records (Landings), on a real SQLite file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from nurture.db import transaction
from nurture.feedback.tracking import Landings
from nurture.models import Event, OutboxMessage
from nurture.people.new_subscribers import add_confirmed
from nurture.people.validation import Signup
from nurture.sending import outbox
from nurture.sending.tracked_links import NEVER_TRACKED, Tracker, _url_hash, destination, links_in, resolve
from nurture.tokens import InvalidToken, Tokens

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
BASE = "https://mail.clinic.example"
ARTICLE = "https://journal.example/ketamine?a=1&b=2"
CONSULT = "https://clinic.example/consultation"
SITE = "https://clinic.example"
UNSUBSCRIBE = "https://mail.clinic.example/unsubscribe/tok"
MESSAGE = (f'<html><body><a href="{ARTICLE.replace("&", "&amp;")}">read</a> <a class="b" href="{CONSULT}">book</a>'
           f' <a href="{UNSUBSCRIBE}">unsubscribe</a> <a href="mailto:x@clinic.example">mail</a></body></html>')
TRACKER = Tracker(BASE, Tokens("k"))


def test_links_in_reads_hrefs_in_order_unescaped_and_http_only():
    assert links_in(MESSAGE) == [ARTICLE, CONSULT, UNSUBSCRIBE]


def test_rewrite_routes_links_through_c_except_untracked_and_keeps_their_places():
    html = TRACKER.rewrite(MESSAGE, 7, untracked=frozenset({UNSUBSCRIBE}), track_opens=False)
    links = links_in(html)
    assert links[2] == UNSUBSCRIBE and all(link.startswith(f"{BASE}/c/") for link in links[:2])
    assert "mailto:x@clinic.example" in html and "/o/" not in html
    # Each token names the row, the link's place in the message and its URL's hash.
    assert [TRACKER.read_click(link.rpartition("/")[2]) for link in links[:2]] == [
        (7, 0, _url_hash(ARTICLE)), (7, 1, _url_hash(CONSULT))]


def test_the_open_pixel_goes_before_the_end_of_body_or_at_the_end():
    html = TRACKER.rewrite(MESSAGE, 7, untracked=frozenset(), track_opens=True)
    assert html.index(f"{BASE}/o/") < html.index("</body>")
    token = html.split(f"{BASE}/o/")[1].split('"')[0]
    assert TRACKER.read_open(token) == 7
    bare = TRACKER.rewrite("<p>no body</p>", 8, untracked=frozenset(), track_opens=True)
    assert bare.startswith("<p>no body</p><img") and "/o/" in bare


def test_tokens_of_one_kind_or_shape_are_refused_as_the_other():
    click = TRACKER.tokens.sign("click", [1, 0, "abc"])
    with pytest.raises(InvalidToken):
        TRACKER.read_open(click)
    with pytest.raises(InvalidToken):
        TRACKER.read_click(TRACKER.tokens.sign("open", 1))
    for bad in ([1, 0], [1, "0", "abc"], ["1", 0, "abc"], [1, 0, 5]):
        with pytest.raises(InvalidToken):
            TRACKER.read_click(TRACKER.tokens.sign("click", bad))
    with pytest.raises(InvalidToken):
        TRACKER.read_open(TRACKER.tokens.sign("open", True))
    with pytest.raises(InvalidToken):
        Tracker(BASE, Tokens("other key")).read_click(click)


def test_resolve_by_place_then_by_hash_anywhere_never_an_unsigned_url():
    links = [ARTICLE, CONSULT]
    assert resolve(links, 1, _url_hash(CONSULT)) == CONSULT
    assert resolve([CONSULT, ARTICLE], 1, _url_hash(CONSULT)) == CONSULT  # moved since: found by hash
    assert resolve(links, 0, _url_hash("https://evil.example")) is None
    assert resolve(links, 9, _url_hash(ARTICLE)) == ARTICLE
    assert destination([], 0, _url_hash(CONSULT), own=(CONSULT, SITE), default=SITE) == CONSULT
    assert destination([], 0, _url_hash(ARTICLE), own=(CONSULT, SITE), default=SITE) == SITE


def test_the_crisis_line_is_never_tracked():
    assert "https://988lifeline.org/chat/" in NEVER_TRACKED


# ----------------------------------------------------------------------------- Landings, on SQLite

@pytest.fixture
def runtime(sqlite_runtime):
    return sqlite_runtime


@pytest.fixture
def sent(runtime):
    """An outbox row of a confirmed person: its id."""
    with transaction(runtime.sessions) as session:
        [person] = add_confirmed(session, [Signup("reader@example.com", None, "UTC", None, False)], now=NOW,
                                 source="test", default_timezone="UTC")
        outbox.enqueue(session, subscriber_id=person, key="seq:nurture:welcome", template="nurture/x.html.j2",
                       due_at=NOW, now=NOW)
        return session.scalar(select(OutboxMessage.id))


def landings(runtime, *, recording=True, message_html=lambda claim, now: MESSAGE) -> Landings:
    return Landings(runtime.sessions, Tracker(BASE, runtime.tokens), recording=recording,
                    message_html=message_html, own=(CONSULT, SITE), default=SITE)


def events(runtime, kind):
    with runtime.sessions() as session:
        return [(e.outbox_id, e.detail) for e in session.scalars(select(Event).where(Event.kind == kind))]


def click_token(runtime, outbox_id, index, url):
    return runtime.tokens.sign("click", [outbox_id, index, _url_hash(url)])


def test_a_click_lands_on_the_signed_link_of_its_message_and_is_recorded(runtime, sent):
    later = NOW + timedelta(days=1)
    assert landings(runtime).click(click_token(runtime, sent, 0, ARTICLE), later) == ARTICLE
    assert landings(runtime).click(click_token(runtime, sent, 1, CONSULT), later) == CONSULT
    assert events(runtime, "clicked") == [(sent, ARTICLE), (sent, CONSULT)]


def test_a_click_never_leaves_for_a_url_the_message_does_not_have(runtime, sent):
    assert landings(runtime).click(click_token(runtime, sent, 0, "https://evil.example"), NOW) == SITE
    with pytest.raises(InvalidToken):
        landings(runtime).click("forged", NOW)


def test_a_message_that_no_longer_renders_still_lands_on_the_clinics_own_links(runtime, sent):
    def broken(claim, now):
        raise RuntimeError("template removed")

    gone = landings(runtime, message_html=broken)
    assert gone.click(click_token(runtime, sent, 1, CONSULT), NOW) == CONSULT
    assert gone.click(click_token(runtime, sent, 0, ARTICLE), NOW) == SITE
    assert events(runtime, "clicked") == [(sent, CONSULT), (sent, SITE)]


def test_a_click_on_the_clinics_own_link_needs_no_render(runtime, sent):
    renders = []

    def counted(claim, now):
        renders.append(claim.id)
        return MESSAGE

    counting = landings(runtime, message_html=counted)
    assert counting.click(click_token(runtime, sent, 1, CONSULT), NOW) == CONSULT
    assert renders == [] and events(runtime, "clicked") == [(sent, CONSULT)]
    assert counting.click(click_token(runtime, sent, 0, ARTICLE), NOW) == ARTICLE and renders == [sent]


def test_without_recording_clicks_land_but_nothing_is_written_and_there_is_no_pixel(runtime, sent):
    quiet = landings(runtime, recording=False)
    assert quiet.click(click_token(runtime, sent, 0, ARTICLE), NOW) == ARTICLE
    assert events(runtime, "clicked") == []
    with pytest.raises(InvalidToken):
        quiet.open(runtime.tokens.sign("open", sent), NOW)


def test_a_click_for_a_message_that_is_gone_lands_on_the_site_unrecorded(runtime, sent):
    assert landings(runtime).click(click_token(runtime, sent + 100, 0, ARTICLE), NOW) == SITE
    assert events(runtime, "clicked") == []


def test_an_open_is_recorded_for_its_message_and_person(runtime, sent):
    landings(runtime).open(runtime.tokens.sign("open", sent), NOW)
    landings(runtime).open(runtime.tokens.sign("open", sent + 100), NOW)  # gone: nothing to record
    assert events(runtime, "opened") == [(sent, None)]
    with pytest.raises(InvalidToken):
        landings(runtime).open(runtime.tokens.sign("click", [sent, 0, "x"]), NOW)
