"""Webhooks out on SQLite and PostgreSQL: events queued by the real actions (a signup through the
web app, a confirmation, a click, a one-click unsubscribe, a bounce ingested, a 5.1.1 reply), and
delivered to a real HTTP receiver on loopback that fails, hangs and then answers: retried with
backoff, delivered once, signed so the receiver can check it; and the mail path never waits."""

from __future__ import annotations

import email
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nurture.db import transaction
from nurture.models import OutboxMessage, Subscriber, WebhookAttempt, WebhookDelivery, WebhookEvent
from nurture.people import webhook_endpoints
from nurture.people.webhook_delivery import Deliverer
from nurture.people.webhook_events import EVENT_KINDS, emit
from nurture.sending import outbox
from nurture.sending.tracked_links import links_in
from nurture.sending.transports import Reply
from nurture.web import create_app
from nurture.webhook_signing import verify

from factories import Clock, confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago: the welcome goes at once


class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread. ``script`` says how to answer each POST in turn
    (an HTTP status, or "hang": say nothing until released); then 200. ``received`` keeps every
    request's headers and raw body, and whether its signature verified against ``secret``."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.received: list[tuple[dict, bytes, bool]] = []
        self.secret = ""
        self.release = threading.Event()
        self.clock = lambda: datetime.now(timezone.utc)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = verify(receiver.secret, body, self.headers["Nurture-Signature"], receiver.clock())
                receiver.received.append((dict(self.headers), body, signed))
                answer = receiver.script.pop(0) if receiver.script else 200
                if answer == "hang":
                    receiver.release.wait(30)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/nurture"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def register(runtime, url: str, events: str = ",".join(EVENT_KINDS)) -> tuple[int, str]:
    with transaction(runtime.sessions) as session:
        endpoint = webhook_endpoints.add(session, url, events, now=T0, production=False)
        return endpoint.id, endpoint.secret


def bodies(runtime) -> list[dict]:
    with runtime.sessions() as session:
        return [json.loads(b) for b in session.scalars(select(WebhookEvent.body).order_by(WebhookEvent.id))]


def last_text(memory_transport, part: str = "plain") -> str:
    message = email.message_from_bytes(memory_transport.sent[-1][2], policy=policy.default)
    return message.get_body((part,)).get_content()


def test_real_actions_queue_their_events(runtime, memory_transport):
    endpoint_id, _secret = register(runtime, "http://127.0.0.1:9/unused")
    clock = Clock(T0)
    with TestClient(create_app(runtime, clock=clock), client=("203.0.113.7", 5555)) as client:
        assert client.post("/subscribe", json={"email": "reader@example.com", "consent": True,
                                               "timezone": "America/Chicago"}).status_code == 202
        assert client.app.state.dispatcher.wait_idle(10)
        link = re.search(r"http://127\.0\.0\.1:8000(/confirm/[A-Za-z0-9_.\-]+)", last_text(memory_transport)).group(1)
        assert client.post(link).status_code == 200
        with runtime.sessions() as session:
            sid = session.scalar(select(Subscriber.id))
        with transaction(runtime.sessions) as session:  # the invitation: the email with the call to action
            outbox.enqueue(session, subscriber_id=sid, key="seq:nurture:consultation-invite",
                           template="nurture/40-consultation-invite.html.j2", due_at=T0, now=T0)
        runtime.sender().run_pass(T0, key_prefix="seq:nurture:consultation")
        click = next(u for u in links_in(last_text(memory_transport, "html")) if "/c/" in u)
        click = click.replace("http://127.0.0.1:8000", "")
        assert client.get(click, follow_redirects=False).status_code in (302, 303, 307)
        token = runtime.tokens.unsubscribe(sid)
        assert client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                           headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 200
    events = bodies(runtime)
    assert [e["kind"] for e in events] == ["subscribed", "confirmed", "clicked", "unsubscribed"]
    assert {e["email"] for e in events} == {"reader@example.com"} and {e["subscriber_id"] for e in events} == {sid}
    clicked = events[2]
    assert clicked["message_key"] == "seq:nurture:consultation-invite" and clicked["url"].startswith("http")
    assert clicked["outbox_id"] > 0
    assert events[3]["scope"] == "all"
    for event in events:  # data minimisation: never the IP, the user agent or a name
        assert set(event) <= {"id", "kind", "occurred_at", "subscriber_id", "email", "outbox_id", "message_key",
                              "url", "scope", "goal"}
        assert "203.0.113.7" not in json.dumps(event) and "testclient" not in json.dumps(event)
    with runtime.sessions() as session:
        assert set(session.scalars(select(WebhookDelivery.endpoint_id))) == {endpoint_id}


def test_a_bounce_ingested_and_a_511_reply_queue_bounced(runtime, memory_transport):
    from .test_bounces_ingest import bounce, run_ingest, welcome_everyone

    register(runtime, "http://127.0.0.1:9/unused", "bounced,complained")
    ids = welcome_everyone(runtime, memory_transport, ["jane.doe@example.org", "happy.reader@yahoo.com"])
    at = T0 + timedelta(hours=1)
    run_ingest(runtime, [bounce("postfix_hard_511.eml", ids["jane.doe@example.org"][0], at=at),
                         bounce("yahoo_arf_complaint.eml", ids["happy.reader@yahoo.com"][0], at=at)], at)
    sid = confirmed(runtime.sessions, "nobody@example.net", T0)
    memory_transport.replies.append(Reply(550, "5.1.1 no such user"))
    runtime.sender().run_pass(T0)
    events = {(e["kind"], e["email"]): e for e in bodies(runtime)}
    assert set(events) == {("bounced", "jane.doe@example.org"), ("complained", "happy.reader@yahoo.com"),
                           ("bounced", "nobody@example.net")}
    assert events["bounced", "jane.doe@example.org"]["message_key"].startswith("seq:nurture:")
    assert events["bounced", "nobody@example.net"]["subscriber_id"] == sid


def test_failures_and_a_timeout_are_retried_with_backoff_and_delivered_once(runtime, receiver):
    endpoint_id, receiver.secret = register(runtime, receiver.url, "goal")
    sid = confirmed(runtime.sessions, "ann@example.com", T0)
    with transaction(runtime.sessions) as session:
        emit(session, "goal", now=T0, subscriber_id=sid, goal="booked")
    receiver.script = [500, "hang"]
    clock = Clock(T0)
    receiver.clock = clock
    deliverer = Deliverer(runtime.sessions, clock=clock, timeout=0.5)

    assert deliverer.run().failed == 1  # 500
    assert deliverer.run().failed == 0  # not due yet: the backoff holds it
    clock.advance(seconds=37)  # past 30 s + 20% jitter
    report = deliverer.run()  # the receiver hangs: a timeout
    assert (report.delivered, report.failed) == (0, 1)
    clock.advance(seconds=73)  # past 60 s + 20%
    assert deliverer.run().delivered == 1
    delivered_at = clock.now
    clock.advance(hours=2)
    assert deliverer.run().delivered == 0  # delivered once, never again

    assert len(receiver.received) == 3
    assert all(signed for _h, _b, signed in receiver.received)  # the receiver checked every signature
    headers, body, _ = receiver.received[-1]
    event = json.loads(body)
    assert headers["Nurture-Event-Id"] == event["id"] and headers["Content-Type"] == "application/json"
    assert int(headers["Nurture-Timestamp"]) == int(delivered_at.timestamp())
    assert (event["kind"], event["email"], event["goal"]) == ("goal", "ann@example.com", "booked")
    assert {json.loads(b)["id"] for _h, b, _s in receiver.received} == {event["id"]}  # the same event each time
    with runtime.sessions() as session:
        log = webhook_endpoints.recent_attempts(session, endpoint_id=endpoint_id)
        delivery = session.scalar(select(WebhookDelivery))
    assert [(a.status, a.ok) for a in reversed(log)] == [(500, False), (None, False), (200, True)]
    assert log[1].reason == "no answer within 0.5 s"
    assert (delivery.state, delivery.attempts) == ("delivered", 3)


def test_a_day_of_failures_pauses_the_endpoint_until_resumed(runtime, receiver):
    endpoint_id, receiver.secret = register(runtime, receiver.url, "confirmed")
    clock = Clock(T0)
    receiver.clock = clock
    receiver.script = [503] * 1000
    confirmed(runtime.sessions, "ann@example.com", T0)
    deliverer = Deliverer(runtime.sessions, clock=clock, timeout=2)
    while clock.now <= T0 + timedelta(days=1, hours=1):
        deliverer.run()
        clock.advance(minutes=20)
    with runtime.sessions() as session:
        [status] = webhook_endpoints.statuses(session)
    assert status.state == "paused" and status.pending == 1 and status.last_failure_reason.startswith("HTTP 503")
    posts = len(receiver.received)
    clock.advance(hours=3)
    deliverer.run()
    assert len(receiver.received) == posts  # a paused endpoint gets nothing

    receiver.script.clear()
    with transaction(runtime.sessions) as session:
        assert webhook_endpoints.resume(session, endpoint_id, now=clock.now) == 1
    assert deliverer.run().delivered == 1
    assert len(receiver.received) == posts + 1 and receiver.received[-1][2]
    with runtime.sessions() as session:
        [status] = webhook_endpoints.statuses(session)
        assert session.query(WebhookAttempt).count() == posts + 1
    assert (status.state, status.delivered, status.pending) == ("active", 1, 0)


def test_a_hung_receiver_never_holds_up_the_mail(runtime, receiver, memory_transport):
    register(runtime, receiver.url, "confirmed")
    receiver.script = ["hang"]
    confirmed(runtime.sessions, "ann@example.com", T0)
    hung = threading.Thread(target=Deliverer(runtime.sessions, clock=lambda: T0, timeout=20).run, daemon=True)
    hung.start()
    deadline = time.monotonic() + 10
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiver.received, "the delivery never reached the receiver"
    with transaction(runtime.sessions) as session:  # more mail, written while the POST hangs
        for n in range(5):
            outbox.enqueue(session, subscriber_id=session.scalar(select(Subscriber.id)), key=f"sys:confirm:{90 + n}",
                           template="system/confirm.html.j2", due_at=T0, now=T0)
    started = time.monotonic()
    summary = runtime.sender().run_pass(T0)
    took = time.monotonic() - started
    assert hung.is_alive(), "the delivery should still be waiting on the receiver"
    assert memory_transport.sent and took < 15, (summary.line(), took)
    with runtime.sessions() as session:
        assert session.scalar(select(WebhookDelivery.state)) == "sending"
        assert session.query(OutboxMessage).filter(OutboxMessage.state == "sent").count() >= 1
    receiver.release.set()
    hung.join(30)


def test_admin_shows_each_endpoint_and_the_delivery_log(tmp_path, database_url, receiver):
    from conftest import make_settings
    from nurture.runtime import Runtime
    from nurture.sending.transports import MemoryTransport

    runtime = Runtime(make_settings(tmp_path, database_url, admin_password="pw"), transport_override=MemoryTransport())
    try:
        up, receiver.secret = register(runtime, receiver.url, "confirmed")
        down, _ = register(runtime, "http://127.0.0.1:9/closed", "confirmed")
        confirmed(runtime.sessions, "ann@example.com", T0)
        Deliverer(runtime.sessions, clock=lambda: T0, timeout=2).run()
        with TestClient(create_app(runtime, dispatch=False, clock=lambda: T0)) as client:
            page = client.get("/admin", auth=("admin", "pw")).text
    finally:
        runtime.close()
    panel = page[page.index('id="webhooks-heading"'):]
    assert receiver.url in panel and "http://127.0.0.1:9/closed" in panel
    assert f'data-webhook-state="{up}">active<' in panel and f'data-webhook-state="{down}">failing<' in panel
    assert "cannot connect" in panel and "delivered" in panel and "evt_" in panel


def test_the_commands_answer_in_one_line(tmp_path):
    from .test_cli import nurture, one_line_error

    nurture(tmp_path, "db", "upgrade")
    added = nurture(tmp_path, "webhooks", "add", "http://127.0.0.1:9/h", "--events", "confirmed,goal").stdout
    assert re.search(r"webhook 1: http://127\.0\.0\.1:9/h\n  events: confirmed, goal\n.*whsec_\S{40,}", added)
    assert "unknown event opened" in one_line_error(
        nurture(tmp_path, "webhooks", "add", "http://x.example/h", "--events", "confirmed,opened", check=False), 1)
    assert "https://" in one_line_error(nurture(tmp_path, "webhooks", "add", "http://x.example/h", check=False,
                                                env={"NURTURE_ENV": "production", "NURTURE_BASE_URL": "https://x.example",
                                                     "NURTURE_SECRET_KEY": "k" * 40}), 1)
    assert "no webhook endpoint 9" in one_line_error(nurture(tmp_path, "webhooks", "resume", "9", check=False), 1)
    listed = nurture(tmp_path, "webhooks", "list").stdout
    assert "http://127.0.0.1:9/h" in listed and "active" in listed
    assert "no webhook deliveries yet" in nurture(tmp_path, "webhooks", "log").stdout
    assert "0 delivered" in nurture(tmp_path, "webhooks", "deliver").stdout
    assert "new signing secret" in nurture(tmp_path, "webhooks", "secret", "1", "--rotate").stdout
    assert "removed webhook 1" in nurture(tmp_path, "webhooks", "remove", "1").stdout
    assert "no webhook endpoints yet" in nurture(tmp_path, "webhooks", "list").stdout


def test_removing_an_endpoint_while_an_event_is_written_fails_neither(runtime):
    endpoint_id, _ = register(runtime, "http://127.0.0.1:9/h", "confirmed")
    sid = confirmed(runtime.sessions, "ann@example.com", T0)
    emitted, errors = threading.Event(), []

    def confirm_elsewhere():
        try:
            with transaction(runtime.sessions) as session:
                assert emit(session, "confirmed", now=T0, subscriber_id=sid) == 1
                emitted.set()
                time.sleep(0.5)  # the removal starts meanwhile
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            emitted.set()

    writer = threading.Thread(target=confirm_elsewhere)
    writer.start()
    assert emitted.wait(10)
    with transaction(runtime.sessions) as session:
        webhook_endpoints.remove(session, endpoint_id)
    writer.join(10)
    assert errors == []
    with runtime.sessions() as session:
        assert session.query(WebhookDelivery).count() == 0 and session.query(WebhookEvent).count() == 2


@pytest.mark.parametrize("vouched", [False, True], ids=["double-opt-in", "confirmed"])
def test_an_imported_list_queues_subscribed_or_confirmed(runtime, tmp_path, vouched):
    from nurture.people.subscriber_files import import_csv

    register(runtime, "http://127.0.0.1:9/h")
    path = tmp_path / "list.csv"
    path.write_text("email,first_name,timezone,consent\nmaria@example.com,María,,yes\ntom@example.com,Tom,,yes\n")
    import_csv(runtime.sessions, path, now=T0, default_timezone="America/Chicago", confirmed=vouched,
               consent_source="paper form" if vouched else None)
    events = bodies(runtime)
    assert {(e["kind"], e["email"]) for e in events} == {
        ("confirmed" if vouched else "subscribed", address) for address in ("maria@example.com", "tom@example.com")}
    assert not any("María" in json.dumps(e, ensure_ascii=False) for e in events)  # never a name


def test_a_signed_booking_queues_a_goal_event_for_a_subscriber_and_none_for_a_stranger(tmp_path, database_url):
    from conftest import make_settings
    from nurture.runtime import Runtime
    from nurture.sending.transports import MemoryTransport
    from nurture.webhook_signing import sign

    secret = "booking-secret-for-the-goal-event"
    rt = Runtime(make_settings(tmp_path, database_url, booking_webhook_secret=secret),
                 transport_override=MemoryTransport())
    try:
        sid = confirmed(rt.sessions, "booker@example.com", T0)
        endpoint_id, _ = register(rt, "http://127.0.0.1:9/unused", "goal")
        with TestClient(create_app(rt, dispatch=False, clock=Clock(T0))) as client:
            for email_address, booking_id in (("booker@example.com", "bk_1"), ("stranger@example.com", "bk_2"),
                                              ("booker@example.com", "bk_1")):  # the last: a retried delivery
                raw = json.dumps({"email": email_address, "id": booking_id}).encode()
                answer = client.post("/hooks/booking", content=raw, headers={
                    "content-type": "application/json", "Nurture-Signature": sign(secret, raw, T0)})
                assert answer.status_code == 200, answer.text
        events = bodies(rt)
        assert [(e["kind"], e["subscriber_id"], e["email"], e["goal"]) for e in events] == [
            ("goal", sid, "booker@example.com", "booked")]  # once; nothing for an address nobody subscribed with
        with rt.sessions() as session:
            assert list(session.scalars(select(WebhookDelivery.endpoint_id))) == [endpoint_id]
    finally:
        rt.close()
