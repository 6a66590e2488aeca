"""Delivery through a real aiosmtpd server on loopback: replies, retries, bounces, outages."""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email import policy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nurture.models import Event, OutboxMessage, OutboxState, Status, Subscriber
from nurture.runtime import Runtime
from nurture.sending.pass_summary import TransportDown
from nurture.web import create_app

from conftest import make_settings
from factories import confirmed

# 15:00 UTC is 09:00 in Chicago: inside the default send window.
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def smtp_runtime(tmp_path, database_url, smtp_server):
    rt = Runtime(make_settings(tmp_path, database_url, smtp_url=smtp_server.url, smtp_pool_size="2"))
    yield rt
    rt.close()


def outbox_rows(rt, prefix="seq:"):
    with rt.sessions() as session:
        return session.scalars(
            select(OutboxMessage).where(OutboxMessage.key.startswith(prefix)).order_by(OutboxMessage.id)
        ).all()


def parsed(received):
    return email.message_from_bytes(received.data, policy=policy.default)


def test_confirmation_email_crosses_a_real_smtp_server(smtp_runtime, smtp_server):
    app = create_app(smtp_runtime)
    with TestClient(app) as client:
        assert client.post("/subscribe", json={"email": "reader@example.com", "consent": True}).status_code == 202
        assert app.state.dispatcher.wait_idle(10)
    [received] = smtp_server.handler.messages
    assert received.rcpt_tos == ["reader@example.com"]
    message = parsed(received)
    assert message["To"] == "reader@example.com"
    assert message["Subject"]
    text = message.get_body(("plain",)).get_content()
    assert "http://127.0.0.1:8000/confirm/" in text
    [row] = outbox_rows(smtp_runtime, "sys:")
    assert row.state is OutboxState.sent and row.smtp_reply.startswith("250")
    assert message["Message-ID"].startswith(f"<{row.id}.")


def test_temporary_failures_are_retried_with_backoff_then_delivered(smtp_runtime, smtp_server):
    confirmed(smtp_runtime.sessions, "slow@example.com", T0)
    smtp_server.handler.script["slow@example.com"] = ["421 4.3.2 shutting down", "451 4.3.0 try again later"]
    sender = smtp_runtime.sender()
    first = sender.run_pass(T0)
    assert first.retried == 1 and first.sent == 0
    [row] = outbox_rows(smtp_runtime)
    assert row.state is OutboxState.retry and row.due_at > T0 + timedelta(minutes=10)
    assert sender.run_pass(T0 + timedelta(minutes=5)).retried == 0  # not yet due again
    assert sender.run_pass(row.due_at).retried == 1
    row = outbox_rows(smtp_runtime)[0]
    assert sender.run_pass(row.due_at).sent == 1
    [row] = outbox_rows(smtp_runtime)
    assert row.state is OutboxState.sent and row.attempts == 3
    assert len(smtp_server.handler.to("slow@example.com")) == 1


def test_unknown_address_bounces_and_the_rest_of_the_batch_goes(smtp_runtime, smtp_server):
    for name in ("a", "gone", "c"):
        confirmed(smtp_runtime.sessions, f"{name}@example.com", T0)
    smtp_server.handler.script["gone@example.com"] = ["550 5.1.1 <gone@example.com>: no such user"]
    summary = smtp_runtime.sender().run_pass(T0)
    assert (summary.sent, summary.failed, summary.bounced) == (2, 1, 1)
    with smtp_runtime.sessions() as session:
        gone = session.scalar(select(Subscriber).where(Subscriber.email == "gone@example.com"))
        assert gone.status is Status.bounced
        assert session.scalar(select(Event).where(Event.kind == "bounced")).subscriber_id == gone.id
    # Never mailed again, even when later steps fall due.
    smtp_runtime.sender().run_pass(T0 + timedelta(days=3))
    assert smtp_server.handler.to("gone@example.com") == []
    assert smtp_server.handler.attempts["gone@example.com"] == 1


def test_server_down_marks_nothing_sent_and_the_next_run_delivers(tmp_path, database_url, smtp_server):
    from smtp_sink import free_port

    down = Runtime(make_settings(tmp_path, database_url, smtp_url=f"smtp://127.0.0.1:{free_port()}"))
    confirmed(down.sessions, "patient@example.com", T0)
    with pytest.raises(TransportDown, match="cannot reach SMTP server"):
        down.sender().run_pass(T0)
    [row] = outbox_rows(down)
    assert row.state is OutboxState.queued and row.sent_at is None and row.attempts == 0
    down.close()
    up = Runtime(make_settings(tmp_path, database_url, smtp_url=smtp_server.url))
    assert up.sender().run_pass(T0 + timedelta(minutes=15)).sent == 1
    assert len(smtp_server.handler.to("patient@example.com")) == 1
    up.close()


def test_a_lost_reply_after_data_is_unknown_and_resent_once_with_the_same_message_id(smtp_runtime, smtp_server):
    confirmed(smtp_runtime.sessions, "flaky@example.com", T0)
    smtp_server.handler.script["flaky@example.com"] = ["drop"]
    sender = smtp_runtime.sender()
    assert sender.run_pass(T0).unknown == 1
    [row] = outbox_rows(smtp_runtime)
    assert row.state is OutboxState.unknown and row.unknowns == 1
    assert sender.run_pass(row.due_at).sent == 1
    copies = smtp_server.handler.to("flaky@example.com")
    assert len(copies) == 2
    assert parsed(copies[0])["Message-ID"] == parsed(copies[1])["Message-ID"]


def test_dev_recipient_receives_everything_and_the_headers_stay_true(tmp_path, database_url, smtp_server):
    rt = Runtime(make_settings(tmp_path, database_url, smtp_url=smtp_server.url,
                               dev_recipient="developer@example.org"))
    confirmed(rt.sessions, "reader@example.com", T0)
    rt.sender().run_pass(T0)
    rt.close()
    [received] = smtp_server.handler.messages
    assert received.rcpt_tos == ["developer@example.org"]  # the envelope goes to the developer
    assert parsed(received)["To"] == "reader@example.com"  # the message shows who it was for


def test_a_connection_the_server_dropped_is_replaced(tmp_path, database_url):
    from smtp_sink import SmtpServer

    server = SmtpServer().__enter__()
    rt = Runtime(make_settings(tmp_path, database_url, smtp_url=server.url, smtp_pool_size="1"))
    confirmed(rt.sessions, "first@example.com", T0)
    sender = rt.sender()
    assert sender.run_pass(T0).sent == 1
    # The server restarts: the pooled connection is now dead.
    server.__exit__(None, None, None)
    with SmtpServer(port=server.port) as restarted:
        confirmed(rt.sessions, "second@example.com", T0)
        assert sender.run_pass(T0 + timedelta(minutes=1)).sent == 1
        assert [m.rcpt_tos for m in restarted.handler.messages] == [["second@example.com"]]
    rt.close()
