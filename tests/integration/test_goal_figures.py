"""The goal in the funnel (`stats`, /admin) against a scene counted by hand, on SQLite and PostgreSQL.

Sends and clicks are written as the sender and the tracker write them; bookings go through
people.goals. The scene (everyone confirmed a week before NOW, the welcome sent at W, step two at S):

    ann  clicked the consultation link in the welcome, then got step two, then booked
    bob  booked after the welcome without clicking anything
    cat  clicked it in the welcome, got step two, clicked it there, booked, and booked again later
    dan  clicked it in the welcome and never booked
    eve  booked after the welcome; the newsletter went to her afterwards
    fay  booked before any email went to her
    old  signed up 40 days ago, booked after the welcome (outside a one-week cohort)
    and an unmatched booking (nobody's address)

So, for the one-week cohort: booked 5 (ann bob cat eve fay), after a click 2 (ann cat); credited
to the last email: how-it-may-work 2 (ann cat), welcome-history 2 (bob eve); to the link clicked
last: welcome-history 1 (ann), how-it-may-work 1 (cat). Everybody: old adds 1 booked and 1 to
welcome-history's last-email credit.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from nurture.content.sequences import load_sequences
from nurture.db import transaction
from nurture.feedback import funnel_figures
from nurture.models import Broadcast, OutboxMessage, OutboxState
from nurture.people.goals import Booking, record_booking
from nurture.sending import outbox
from nurture.web import create_app

from conftest import TEMPLATES, make_settings
from factories import Clock, confirmed

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
JOINED = NOW - timedelta(days=7)
W = JOINED + timedelta(hours=1)  # the welcome
S = JOINED + timedelta(days=2)  # step two
CONSULTATION = "https://clearwater-psychiatry.example/consultation"
WELCOME, STEP2 = "seq:nurture:welcome-history", "seq:nurture:how-it-may-work"


def build(sessions) -> None:
    ids = {name: confirmed(sessions, f"{name}@example.com", JOINED) for name in ("ann", "bob", "cat", "dan", "eve", "fay")}
    ids["old"] = confirmed(sessions, "old@example.com", NOW - timedelta(days=40))
    with transaction(sessions) as session:
        issue = Broadcast(template="newsletter/2026-12-winter.html.j2", audience="all", status="sent",
                          send_at=JOINED + timedelta(days=4), created_at=JOINED, recipients=1)
        session.add(issue)
        session.flush()

        def send(who, key, at):
            row = OutboxMessage(subscriber_id=ids[who], key=key, template="t", state=OutboxState.sent, due_at=at,
                                created_at=at, attempts=1, unknowns=0, sent_at=at, smtp_reply="250 ok")
            session.add(row)
            session.flush()
            outbox.record_event(session, "sent", at, subscriber_id=ids[who], outbox_id=row.id)
            return row.id

        def click(who, row, at, url=CONSULTATION):
            outbox.record_event(session, "clicked", at, subscriber_id=ids[who], outbox_id=row, detail=url)

        def book(email, at):
            record_booking(session, Booking(email, at, "cli"), now=at)

        rows = {who: send(who, WELCOME, W) for who in ("ann", "bob", "cat", "dan", "eve")}
        old_welcome = send("old", WELCOME, NOW - timedelta(days=39))
        click("ann", rows["ann"], W + timedelta(hours=1))
        click("ann", rows["ann"], W + timedelta(hours=2), url="https://clearwater-psychiatry.example")  # not the goal
        ann2 = send("ann", STEP2, S)
        book("ann@example.com", S + timedelta(hours=3))
        book("bob@example.com", W + timedelta(hours=2))
        click("cat", rows["cat"], W + timedelta(hours=1))
        cat2 = send("cat", STEP2, S)
        click("cat", cat2, S + timedelta(minutes=30))
        book("cat@example.com", S + timedelta(hours=1))
        book("cat@example.com", S + timedelta(days=3))
        click("cat", cat2, S + timedelta(days=4))  # after booking: credits nothing
        click("dan", rows["dan"], W + timedelta(hours=1))
        book("eve@example.com", W + timedelta(hours=5))
        send("eve", f"bcast:{issue.id}", JOINED + timedelta(days=4))
        book("fay@example.com", JOINED + timedelta(minutes=10))
        book("old@example.com", NOW - timedelta(days=39) + timedelta(hours=1))
        book("nobody@example.com", W)
        del ann2, old_welcome


@pytest.fixture
def scene(runtime):
    build(runtime.sessions)
    return runtime


def figures(runtime, since):
    sequence = load_sequences(TEMPLATES)["nurture"]
    with runtime.sessions() as session:
        return funnel_figures.with_bookings(
            session, funnel_figures.funnel(session, since=since, sequence=sequence, consultation_url=CONSULTATION))


def test_the_bookings_take_one_query(scene):
    from sqlalchemy import event

    statements = []

    def seen(_conn, _cursor, statement, *_rest):
        statements.append(statement)

    event.listen(scene.engine, "before_cursor_execute", seen)
    try:
        with scene.sessions() as session:
            funnel_figures.bookings(session, since=JOINED, consultation_url=CONSULTATION)
    finally:
        event.remove(scene.engine, "before_cursor_execute", seen)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_bookings_are_counted_and_credited_as_counted_by_hand(scene):
    week = figures(scene, JOINED - timedelta(minutes=1))
    assert (week.signups, week.confirmed) == (6, 6)
    assert week.bookings == funnel_figures.Bookings(
        booked=5, after_click=2, by_last_email={STEP2: 2, WELCOME: 2}, by_click={WELCOME: 1, STEP2: 1})
    assert week.booking_rate == pytest.approx(5 / 6)
    everyone = figures(scene, None)
    assert everyone.bookings == funnel_figures.Bookings(
        booked=6, after_click=2, by_last_email={STEP2: 2, WELCOME: 3}, by_click={WELCOME: 1, STEP2: 1})
    # The funnel's own figures are untouched by the goal: consultation clicks are still clicks.
    assert week.goal == 3  # ann, cat, dan clicked the consultation link
    data = week.to_dict()
    assert data["bookings"] == {"booked": 5, "after_click": 2, "by_last_email": {STEP2: 2, WELCOME: 2},
                                "by_click": {WELCOME: 1, STEP2: 1}, "booking_rate": 0.8333}


def test_the_dashboard_shows_bookings_and_the_unmatched_ones(tmp_path, database_url, memory_transport):
    from nurture.runtime import Runtime

    rt = Runtime(make_settings(tmp_path, database_url, admin_password="pw"), transport_override=memory_transport)
    try:
        build(rt.sessions)
        with TestClient(create_app(rt, dispatch=False, clock=Clock(NOW))) as client:
            page = client.get("/admin?days=7", auth=("admin", "pw"))
            search = client.get("/admin", params={"email": "Nobody@example.com"}, auth=("admin", "pw"))
    finally:
        rt.close()
    assert page.status_code == 200

    def figure(name):
        return re.search(rf'data-figure="{re.escape(name)}">([^<]*)<', page.text).group(1)

    assert figure("booked") == "5" and figure("bookings:booked") == "5" and figure("bookings:after_click") == "2"
    assert figure(f"bookings:email:{STEP2}") == "2" and figure(f"bookings:email:{WELCOME}") == "2"
    assert figure(f"bookings:click:{WELCOME}") == "1" and figure(f"bookings:click:{STEP2}") == "1"
    assert figure("unmatched") == "1"
    assert re.findall(r"data-unmatched>([^<]*)<", page.text) == ["n•••@example.com"]
    assert "nobody@example.com" not in page.text
    assert "No subscriber has the address nobody@example.com." in search.text
    assert "A booking for this address was received" in search.text
