"""Webhook events and endpoints on one SQLite file: what is queued for whom, what a body holds,
and the rules for endpoints (URLs, event names, pausing, resuming). Delivery against a real
receiver, on both databases, is tests/integration/test_webhooks.py."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from nurture.db import transaction
from nurture.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from nurture.people import webhook_endpoints
from nurture.people.webhook_delivery import Answer, Deliverer, backoff
from nurture.people.webhook_endpoints import EndpointError, check_url
from nurture.people.webhook_events import UnknownEvent, emit, forget, parse_kinds

from factories import Clock, subscriber

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


def add(runtime, url="https://crm.example/hook", events="subscribed,confirmed"):
    with transaction(runtime.sessions) as session:
        return webhook_endpoints.add(session, url, events, now=T0, production=True).id


def count(runtime, model) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_without_endpoints_an_event_costs_nothing(sqlite_runtime):
    sid = subscriber(sqlite_runtime.sessions, "ann@example.com", T0)
    with transaction(sqlite_runtime.sessions) as session:
        assert emit(session, "confirmed", now=T0, subscriber_id=sid) == 0
    assert count(sqlite_runtime, WebhookEvent) == 0


def test_one_delivery_per_endpoint_that_asked_for_the_kind(sqlite_runtime):
    sid = subscriber(sqlite_runtime.sessions, "ann@example.com", T0)
    a = add(sqlite_runtime, events="confirmed")
    b = add(sqlite_runtime, "https://n8n.example/w", events="confirmed,clicked")
    add(sqlite_runtime, "https://other.example/w", events="bounced")
    with transaction(sqlite_runtime.sessions) as session:
        assert emit(session, "confirmed", now=T0, subscriber_id=sid) == 2
        assert emit(session, "clicked", now=T0, subscriber_id=sid, url="https://clinic.example/consult") == 1
    with sqlite_runtime.sessions() as session:
        queued = session.execute(select(WebhookDelivery.endpoint_id, WebhookEvent.kind).join(WebhookEvent)).all()
    assert sorted(queued) == sorted([(a, "confirmed"), (b, "confirmed"), (b, "clicked")])


def test_the_body_holds_the_address_and_ids_and_nothing_else(sqlite_runtime):
    sid = subscriber(sqlite_runtime.sessions, "ann@example.com", T0)
    add(sqlite_runtime, events="clicked")
    with transaction(sqlite_runtime.sessions) as session:
        emit(session, "clicked", now=T0, subscriber_id=sid, message_key="seq:nurture:invite",
             url="https://clinic.example/consult")
    with sqlite_runtime.sessions() as session:
        body = json.loads(session.scalar(select(WebhookEvent.body)))
    assert body.pop("id").startswith("evt_")
    assert body == {"kind": "clicked", "occurred_at": "2026-12-01T15:00:00Z", "subscriber_id": sid,
                    "email": "ann@example.com", "message_key": "seq:nurture:invite",
                    "url": "https://clinic.example/consult"}


def test_unknown_kinds_and_details_are_refused(sqlite_runtime):
    add(sqlite_runtime, events="confirmed")
    with transaction(sqlite_runtime.sessions) as session:
        with pytest.raises(UnknownEvent):
            emit(session, "opened", now=T0, subscriber_id=None)
        with pytest.raises(UnknownEvent, match="ip"):
            emit(session, "confirmed", now=T0, subscriber_id=None, ip="192.0.2.1")


def test_event_names_and_urls_are_checked_in_one_line():
    assert parse_kinds(" goal , subscribed ") == ("subscribed", "goal")  # documented order
    with pytest.raises(UnknownEvent, match="unknown event opened, sent"):
        parse_kinds("subscribed,opened,sent")
    with pytest.raises(EndpointError, match="https://"):
        check_url("http://crm.example/hook", production=True)
    assert check_url("http://127.0.0.1:5678/hook", production=False)
    for bad in ("ftp://crm.example", "https://", "https://user:pw@crm.example/", "crm.example/hook"):
        with pytest.raises(EndpointError):
            check_url(bad, production=False)


def test_erasing_a_person_forgets_their_events(sqlite_runtime):
    sid = subscriber(sqlite_runtime.sessions, "ann@example.com", T0)
    add(sqlite_runtime, events="confirmed")
    with transaction(sqlite_runtime.sessions) as session:
        emit(session, "confirmed", now=T0, subscriber_id=sid)
        forget(session, sid)
    assert count(sqlite_runtime, WebhookEvent) == count(sqlite_runtime, WebhookDelivery) == 0


def test_backoff_doubles_with_jitter_up_to_an_hour():
    rng = random.Random(1)
    for attempts, base in ((1, 30), (2, 60), (3, 120), (8, 3600), (40, 3600)):
        wait = backoff(attempts, rng).total_seconds()
        assert base * 0.8 <= wait <= base * 1.2, (attempts, wait)


class Script:
    """A poster that answers from a list and remembers what it was sent."""

    def __init__(self, *answers: Answer) -> None:
        self.answers, self.posts = list(answers), []

    def __call__(self, url, body, headers, timeout):
        self.posts.append((url, body, headers))
        return self.answers.pop(0) if self.answers else Answer(200, "HTTP 200")


def test_a_failing_endpoint_does_not_hold_up_another_and_waits_its_turn(sqlite_runtime):
    sid = subscriber(sqlite_runtime.sessions, "ann@example.com", T0)
    bad = add(sqlite_runtime, "https://down.example/h", events="confirmed")
    add(sqlite_runtime, "https://up.example/h", events="confirmed")
    with transaction(sqlite_runtime.sessions) as session:
        for _ in range(3):
            emit(session, "confirmed", now=T0, subscriber_id=sid)
    clock = Clock(T0)
    poster = Script(Answer(503, "HTTP 503 Service Unavailable"))
    report = Deliverer(sqlite_runtime.sessions, clock=clock, post=poster).run()
    # The first post to the bad endpoint failed; its two others waited for that retry, untried.
    assert (report.delivered, report.failed, report.waiting) == (3, 1, 2)
    assert [u for u, _b, _h in poster.posts].count("https://down.example/h") == 1
    with sqlite_runtime.sessions() as session:
        waiting = session.execute(select(WebhookDelivery.state, WebhookDelivery.attempts, WebhookDelivery.due_at)
                                  .where(WebhookDelivery.endpoint_id == bad).order_by(WebhookDelivery.id)).all()
        assert [(state, attempts) for state, attempts, _due in waiting] == [("retry", 1), ("queued", 0), ("queued", 0)]
        assert {due for _s, _a, due in waiting} == {waiting[0].due_at} and waiting[0].due_at > T0
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 4
    clock.advance(minutes=2)
    assert Deliverer(sqlite_runtime.sessions, clock=clock, post=poster).run().delivered == 3


def test_a_day_of_failures_pauses_and_resuming_sends_what_waited(sqlite_runtime):
    sid = subscriber(sqlite_runtime.sessions, "ann@example.com", T0)
    endpoint = add(sqlite_runtime, events="confirmed")
    with transaction(sqlite_runtime.sessions) as session:
        emit(session, "confirmed", now=T0, subscriber_id=sid)
    clock = Clock(T0)
    down = Script(*[Answer(None, "cannot connect: refused")] * 100)
    deliverer = Deliverer(sqlite_runtime.sessions, clock=clock, post=down)
    while clock.now < T0 + timedelta(days=1, hours=2):
        deliverer.run()
        clock.advance(minutes=30)
    with sqlite_runtime.sessions() as session:
        [status] = webhook_endpoints.statuses(session)
    assert status.state == "paused" and status.paused_at >= T0 + timedelta(days=1)
    assert status.last_failure_reason == "cannot connect: refused" and status.pending == 1
    tried = len(down.posts)
    clock.advance(hours=5)
    deliverer.run()
    assert len(down.posts) == tried  # paused: nothing is posted
    with transaction(sqlite_runtime.sessions) as session:
        assert webhook_endpoints.resume(session, endpoint, now=clock.now) == 1
    assert Deliverer(sqlite_runtime.sessions, clock=clock, post=Script()).run().delivered == 1
    with sqlite_runtime.sessions() as session:
        [status] = webhook_endpoints.statuses(session)
    assert (status.state, status.delivered, status.pending) == ("active", 1, 0)
