"""Goals, end to end on SQLite and PostgreSQL: the signed booking webhook (signed, unsigned, bad
signature, stale, replayed, unknown address, malformed), `nurture goal booked` and `goal import`,
and what a booking does to the person's mail over real sending passes (MemoryTransport)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nurture.content.sequences import load_newsletters
from nurture.db import transaction
from nurture.models import NEVER, ConsentEvent, Goal, OutboxMessage, OutboxState, Subscriber
from nurture.runtime import Runtime
from nurture.sending import broadcasts
from nurture.sending.journey import Planner
from nurture.web import create_app
from nurture.webhook_signing import sign

from conftest import make_settings
from factories import Clock, confirmed

# Monday 2026-11-02 15:00 UTC is 09:00 in Chicago: the send window is open.
START = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
SECRET = "whsec-test-booking-secret"


@pytest.fixture
def rt(tmp_path, database_url, memory_transport):
    runtime = Runtime(make_settings(tmp_path, database_url, booking_webhook_secret=SECRET),
                      transport_override=memory_transport)
    yield runtime
    runtime.close()


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def client(rt, clock):
    with TestClient(create_app(rt, dispatch=False, clock=clock)) as test_client:
        yield test_client


def post(client, payload, *, at: datetime, secret: str = SECRET, body: bytes | None = None, headers=None):
    raw = body if body is not None else json.dumps(payload).encode()
    signed = {"Nurture-Signature": sign(secret, raw, at)}
    return client.post("/hooks/booking", content=raw,
                       headers={"content-type": "application/json"} | signed | (headers or {}))


def goals(rt) -> list[Goal]:
    with rt.sessions() as session:
        return list(session.scalars(select(Goal).order_by(Goal.id)))


def ledger(rt) -> list[tuple]:
    with rt.sessions() as session:
        return [tuple(r) for r in session.execute(select(ConsentEvent.id, ConsentEvent.kind, ConsentEvent.scope))]


def sent_keys(rt) -> list[str]:
    with rt.sessions() as session:
        return list(session.scalars(select(OutboxMessage.key).where(OutboxMessage.state == OutboxState.sent)
                                    .order_by(OutboxMessage.id)))


def states(rt, sid) -> dict[str, str]:
    with rt.sessions() as session:
        return {k: s.value for k, s in session.execute(
            select(OutboxMessage.key, OutboxMessage.state).where(OutboxMessage.subscriber_id == sid))}


def plan(rt, now):
    """Queue what is due at ``now`` without sending it (the first half of a pass)."""
    with transaction(rt.sessions) as session:
        return Planner.from_settings(rt.settings)(session, now)


def test_a_signed_booking_cancels_the_queued_step_and_nothing_more_is_planned(rt, client, clock, memory_transport):
    sid = confirmed(rt.sessions, "pat@example.com", START)
    rt.sender().run_pass(START)
    assert sent_keys(rt) == ["seq:nurture:welcome-history"]
    step_two = START + 2 * DAY
    assert plan(rt, step_two) == 1  # "how it may work" is queued, not yet sent
    before = ledger(rt)

    clock.now = step_two
    response = post(client, {"email": "Pat@Example.com", "id": "bk_1", "booked_at": "2026-11-04T14:55:00Z"},
                    at=step_two)
    assert response.status_code == 200, response.text
    assert response.json() | {"goal_id": 0} == {"recorded": True, "duplicate": False, "matched": True, "goal_id": 0}
    [goal] = goals(rt)
    assert (goal.subscriber_id, goal.source, goal.external_id, goal.email_hint) == (sid, "webhook", "bk_1", None)
    assert goal.booked_at == datetime(2026, 11, 4, 14, 55, tzinfo=timezone.utc) and goal.received_at == step_two
    assert states(rt, sid)["seq:nurture:how-it-may-work"] == "suppressed"
    with rt.sessions() as session:
        assert session.get(Subscriber, sid).next_due_at == NEVER
        assert session.get(Subscriber, sid).wants_series is True  # their wish, untouched

    # Real passes for three weeks: no sequence email ever again, even after everyone is replanned.
    for day in range(0, 21):
        rt.sender().run_pass(step_two + day * DAY)
    with transaction(rt.sessions) as session:
        from nurture.sending.journey import replan_everyone
        replan_everyone(session)
    rt.sender().run_pass(step_two + 22 * DAY)
    assert sent_keys(rt) == ["seq:nurture:welcome-history"]
    assert ledger(rt) == before

    # The newsletter still goes to them.
    planner = Planner.from_settings(rt.settings)
    with transaction(rt.sessions) as session:
        issue = broadcasts.create(session, newsletter=load_newsletters(rt.settings.templates_dir)["2026-12-winter"],
                                  audience="all", send_at=step_two + 23 * DAY, now=step_two + 23 * DAY,
                                  sequence=planner.sequence(), window=planner.window).id
    rt.sender().run_pass(step_two + 23 * DAY)
    assert sent_keys(rt)[-1] == f"bcast:{issue}"
    assert [r for _, r, _ in memory_transport.sent][-1] == "pat@example.com"
    assert ledger(rt) == before


def test_unsigned_and_badly_signed_bookings_are_refused_and_record_nothing(rt, client):
    confirmed(rt.sessions, "pat@example.com", START)
    body = json.dumps({"email": "pat@example.com", "id": "bk_1"}).encode()
    unsigned = client.post("/hooks/booking", content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401 and "not signed" in unsigned.json()["error"]
    assert unsigned.headers["www-authenticate"] == "Nurture-Signature"
    wrong_key = post(client, None, body=body, at=START, secret="not-the-secret")
    assert wrong_key.status_code == 401 and "does not match" in wrong_key.json()["error"]
    # A valid signature of another body does not carry over to this one.
    other = json.dumps({"email": "eve@example.com", "id": "bk_1"}).encode()
    header = sign(SECRET, other, START)
    tampered = client.post("/hooks/booking", content=body,
                           headers={"content-type": "application/json", "Nurture-Signature": header})
    assert tampered.status_code == 401
    garbage = client.post("/hooks/booking", content=body,
                          headers={"content-type": "application/json", "Nurture-Signature": "v1=abc"})
    assert garbage.status_code == 401
    assert goals(rt) == []


def test_stale_and_future_signatures_are_refused(rt, client):
    confirmed(rt.sessions, "pat@example.com", START)
    payload = {"email": "pat@example.com", "id": "bk_1"}
    assert post(client, payload, at=START - timedelta(minutes=5, seconds=1)).status_code == 401
    assert post(client, payload, at=START + timedelta(minutes=5, seconds=1)).status_code == 401
    assert goals(rt) == []
    assert post(client, payload, at=START - timedelta(minutes=4, seconds=59)).status_code == 200
    assert len(goals(rt)) == 1


def test_a_replayed_delivery_is_answered_as_a_duplicate_and_records_nothing(rt, client, clock):
    sid = confirmed(rt.sessions, "pat@example.com", START)
    payload = {"email": "pat@example.com", "id": "bk_1"}
    body = json.dumps(payload).encode()
    first = post(client, None, body=body, at=START)
    clock.advance(minutes=3)
    again = post(client, None, body=body, at=START)  # the very same request, three minutes later
    assert first.json()["recorded"] is True
    assert again.status_code == 200
    assert again.json() == {"recorded": False, "duplicate": True, "matched": True, "goal_id": first.json()["goal_id"]}
    # The same event id with a fresh signature is still the same booking.
    assert post(client, payload, at=clock.now).json()["duplicate"] is True
    assert [(g.subscriber_id, g.external_id) for g in goals(rt)] == [(sid, "bk_1")]
    clock.advance(minutes=3)  # now outside the window: the old signature is stale
    assert post(client, None, body=body, at=START).status_code == 401


def test_a_booking_for_an_unknown_address_is_kept_unmatched_and_creates_nobody(rt, client):
    response = post(client, {"email": "Stranger@Gmial.com", "id": 42, "booked_at": "2026-11-02T08:00:00-06:00"},
                    at=START)
    assert response.status_code == 200 and response.json()["matched"] is False
    [goal] = goals(rt)
    assert goal.subscriber_id is None and goal.email_hint == "s•••@gmial.com" and goal.external_id == "42"
    assert "stranger" not in goal.email_hash
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        from nurture.people.goals import unmatched, unmatched_for
        assert unmatched(session).total == 1
        assert [g.id for g in unmatched_for(session, "stranger@gmial.com")] == [goal.id]


@pytest.mark.parametrize("body, content_type, status, says", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 422, "must be an object"),
    (b'{"id": "x"}', "application/json", 422, "no email"),
    (b'{"email": "pat@example.com"}', "application/json", 422, "no id"),
    (b'{"email": "not an address", "id": "x"}', "application/json", 422, "look like an email"),
    (b'{"email": "pat@example.com", "id": "x", "booked_at": "soon"}', "application/json", 422, "ISO-8601"),
    (b'{"email": "pat@example.com", "id": "x", "booked_at": "2026-11-02T08:00:00"}', "application/json", 422,
     "offset"),
    (b'{"email": "pat@example.com", "id": "x", "booked_at": 5}', "application/json", 422, "ISO-8601"),
    (b'{"email": "pat@example.com", "id": ""}', "application/json", 422, "id must be"),
    (b"email=pat@example.com&id=x", "application/x-www-form-urlencoded", 415, "JSON"),
])
def test_a_malformed_signed_body_is_a_4xx_with_a_message(rt, client, body, content_type, status, says):
    confirmed(rt.sessions, "pat@example.com", START)
    header = sign(SECRET, body, START)
    response = client.post("/hooks/booking", content=body, headers={"content-type": content_type,
                                                                     "Nurture-Signature": header})
    assert response.status_code == status
    assert says in response.json()["error"]
    assert goals(rt) == []


def test_an_oversized_body_is_413(rt, client):
    response = post(client, {"email": "pat@example.com", "id": "x", "pad": "x" * 20000}, at=START)
    assert response.status_code == 413


def test_without_a_secret_the_endpoint_does_not_exist(runtime):
    with TestClient(create_app(runtime, dispatch=False, clock=Clock(START))) as client:
        response = post(client, {"email": "pat@example.com", "id": "x"}, at=START)
    assert response.status_code == 404
    assert response.json() == {"error": "There is no page at this address."}


def test_a_pending_person_who_books_never_gets_the_series(rt, client):
    """Booked before confirming: the confirmation still counts, and no step is ever planned."""
    from nurture.people import subscribers
    from nurture.people.validation import Signup

    from factories import REQUEST

    with transaction(rt.sessions) as session:
        sid = subscribers.subscribe(session, Signup("pat@example.com", None, "America/Chicago", None, False),
                                    now=START, request=REQUEST, default_timezone="America/Chicago",
                                    confirmations_per_day=3).subscriber_id
    assert post(client, {"email": "pat@example.com", "id": "x"}, at=START).json()["matched"] is True
    with transaction(rt.sessions) as session:
        subscribers.confirm(session, sid, 1, now=START + timedelta(hours=1), request=REQUEST)
    for day in range(8):
        rt.sender().run_pass(START + timedelta(hours=1) + day * DAY)
    assert [k for k in sent_keys(rt) if k.startswith("seq:")] == []


def test_explain_and_the_preferences_page_say_the_series_ended(rt, client, clock):
    from nurture.feedback.timeline import build_timeline
    from nurture.people.preferences import Series, preferences_of_id

    sid = confirmed(rt.sessions, "pat@example.com", START)
    rt.sender().run_pass(START)
    post(client, {"email": "pat@example.com", "id": "bk_9", "booked_at": "2026-11-02T16:00:00Z"}, at=START)
    planner = Planner.from_settings(rt.settings)
    with rt.sessions() as session:
        timeline = build_timeline(session, "pat@example.com", now=START + DAY, planner=planner,
                                  secret=rt.settings.secret, from_header=rt.settings.mail_from)
        state = preferences_of_id(session, sid, planner.sequence())
    assert timeline.next_at is None
    assert timeline.why_nothing == ("booked a consultation on 2026-11-02 16:00 UTC, which ended the series; "
                                    "receives the newsletter")
    [entry] = [e for e in timeline.entries if e.what.startswith("goal")]
    assert entry.detail.startswith("via webhook (id bk_9)")
    assert state.series is Series.finished and state.booked
    assert "resume-series" not in [c.value for c in state.changes]
    page = client.get(f"/preferences/{rt.tokens.unsubscribe(sid)}")
    assert "You booked a consultation, so the series ended after 1 of its" in page.text
