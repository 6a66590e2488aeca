"""One message never stops another: international addresses and poison messages among good ones,
through a real aiosmtpd server, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nurture.db import transaction
from nurture.feedback import reports
from nurture.feedback.timeline import build_timeline
from nurture.models import OutboxMessage, OutboxState
from nurture.runtime import Runtime
from nurture.sending import outbox
from nurture.sending.journey import Planner
from nurture.web import create_app

from conftest import make_settings
from factories import confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago
IDN = "dora@bücher.example.com"
UTF8_LOCAL = "zoë@example.com"


def runtime_for(tmp_path, database_url, server, **overrides):
    return Runtime(make_settings(tmp_path, database_url, smtp_url=server.url, smtp_pool_size="2", **overrides))


def parsed(received):
    return email.message_from_bytes(received.data, policy=policy.default)




def timeline_of(rt, address):
    s = rt.settings
    with rt.sessions() as session:
        return build_timeline(session, address, now=T0, planner=Planner.from_settings(s), secret=s.secret,
                              from_header=s.mail_from)


@pytest.fixture
def plain_server():
    """A server without SMTPUTF8, as many relays are."""
    from smtp_sink import SmtpServer

    with SmtpServer(smtputf8=False) as server:
        yield server


@pytest.fixture
def utf8_server():
    from smtp_sink import SmtpServer

    with SmtpServer(smtputf8=True) as server:
        yield server


def test_poison_messages_fail_alone_and_the_hundred_good_ones_go_in_the_same_pass(tmp_path, database_url,
                                                                                   plain_server):
    rt = runtime_for(tmp_path, database_url, plain_server)
    good = [f"good{i}@example.com" for i in range(100)]
    for address in good:
        confirmed(rt.sessions, address, T0)
    zoe = confirmed(rt.sessions, UTF8_LOCAL, T0)
    confirmed(rt.sessions, IDN, T0)
    # A newsletter whose template was removed after it was queued: rendering it raises.
    ghost = confirmed(rt.sessions, "ghost@example.com", T0)
    with transaction(rt.sessions) as session:
        outbox.enqueue(session, subscriber_id=ghost, key="bcast:404", template="newsletter/removed.html.j2",
                       due_at=T0, now=T0)

    summary = rt.sender().run_pass(T0)  # must not raise

    delivered = {m.rcpt_tos[0] for m in plain_server.handler.messages}
    assert set(good) <= delivered
    assert "dora@xn--bcher-kva.example.com" in delivered  # the domain as IDNA A-labels
    assert UTF8_LOCAL not in delivered
    # The good ones and dora (ghost's welcome waits: one marketing email a day, and the newsletter
    # holds today's place).
    assert summary.sent == 100 + 1
    assert summary.failed == 1 and summary.retried == 1
    assert "newsletter/removed.html.j2" in summary.broken  # a content error is reported, not hidden

    with rt.sessions() as session:
        zoe_row = session.scalar(select(OutboxMessage).where(OutboxMessage.subscriber_id == zoe,
                                                              OutboxMessage.key.startswith("seq:")))
        ghost_row = session.scalar(select(OutboxMessage).where(OutboxMessage.key == "bcast:404"))
    assert zoe_row.state is OutboxState.failed and "SMTPUTF8" in zoe_row.last_error
    assert zoe_row.last_error.startswith("undeliverable: the mail server does not offer SMTPUTF8")  # said once
    assert ghost_row.state is OutboxState.retry and "render error" in ghost_row.last_error
    assert ghost_row.due_at > T0  # retried with the usual backoff, once the template is back

    # The reason is shown to the operator where they look for one person.
    zoe_story = timeline_of(rt, UTF8_LOCAL)
    assert any("SMTPUTF8" in entry.detail and "failed" in entry.what for entry in zoe_story.entries)
    ghost_story = timeline_of(rt, "ghost@example.com")
    assert any("render error" in entry.detail for entry in ghost_story.entries)
    # ...and in the figures: `nurture stats` and /admin.
    with rt.sessions() as session:
        trouble = reports.problems(session)
    assert (trouble.retrying, trouble.failed) == (1, 1)
    assert {key for key, _ in trouble.latest} == {"bcast:404", zoe_row.key}
    rt.close()
    admin = Runtime(make_settings(tmp_path, database_url, admin_password="pw"))
    with TestClient(create_app(admin, dispatch=False, clock=lambda: T0)) as client:
        page = client.get("/admin", auth=("admin", "pw")).text
        person = client.get("/admin", params={"email": UTF8_LOCAL}, auth=("admin", "pw")).text
    assert "render error" in page  # the queue shows why the retry waits
    assert "SMTPUTF8" in person  # and a person's timeline why their email failed
    admin.close()


def test_an_idn_domain_goes_as_a_labels_in_envelope_and_header(tmp_path, database_url, plain_server):
    rt = runtime_for(tmp_path, database_url, plain_server)
    confirmed(rt.sessions, IDN, T0)
    assert rt.sender().run_pass(T0).sent == 1
    [received] = plain_server.handler.messages
    assert received.rcpt_tos == ["dora@xn--bcher-kva.example.com"]
    assert "SMTPUTF8" not in received.mail_options  # an ASCII envelope needs no extension
    message = parsed(received)
    assert message["To"] == "dora@xn--bcher-kva.example.com"
    assert b"=?" not in received.data.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0]
    rt.close()


def test_a_utf8_local_part_goes_under_smtputf8_with_a_utf8_to_header(tmp_path, database_url, utf8_server):
    rt = runtime_for(tmp_path, database_url, utf8_server)
    confirmed(rt.sessions, UTF8_LOCAL, T0)
    confirmed(rt.sessions, "plain@example.com", T0)
    assert rt.sender().run_pass(T0).sent == 2
    [zoe] = utf8_server.handler.to(UTF8_LOCAL)
    assert "SMTPUTF8" in zoe.mail_options
    to_line = zoe.data.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0]
    assert to_line == UTF8_LOCAL.encode("utf-8")  # RFC 6532: UTF-8, not an encoded-word
    assert parsed(zoe)["To"] == UTF8_LOCAL
    # The next message on the same pooled connection is plain ASCII again.
    [plain] = utf8_server.handler.to("plain@example.com")
    assert "SMTPUTF8" not in plain.mail_options
    rt.close()


def test_the_maildir_transport_stores_international_addresses(tmp_path, database_url):
    rt = Runtime(make_settings(tmp_path, database_url))
    confirmed(rt.sessions, UTF8_LOCAL, T0)
    confirmed(rt.sessions, IDN, T0)
    assert rt.sender().run_pass(T0).sent == 2
    stored = [email.message_from_bytes(p.read_bytes(), policy=policy.default)
              for p in (tmp_path / "outbox" / "new").iterdir()]
    assert sorted(m["To"] for m in stored) == ["dora@xn--bcher-kva.example.com", UTF8_LOCAL]
    rt.close()


def test_a_transport_error_on_one_message_is_retried_alone(runtime, memory_transport):
    for name in ("a", "b", "c"):
        confirmed(runtime.sessions, f"{name}@example.com", T0)

    def explode(recipient):
        if recipient == "b@example.com":
            raise UnicodeEncodeError("ascii", recipient, 0, 1, "an unforeseen encoding problem")

    memory_transport.on_send = explode
    summary = runtime.sender().run_pass(T0)
    assert (summary.sent, summary.retried, summary.failed) == (2, 1, 0)
    with runtime.sessions() as session:
        retry = session.scalar(select(OutboxMessage).where(OutboxMessage.state == OutboxState.retry))
    assert "UnicodeEncodeError" in retry.last_error and retry.due_at > T0


def test_a_template_broken_for_days_holds_its_mail_without_giving_it_up_and_it_goes_once_fixed(
        tmp_path, database_url, plain_server):
    """A render error is the template's fault, not the message's: it is held at a steady pace,
    never counted as an attempt or failed (a weekend of a broken file must not lose anyone's
    email), and the message goes at the first pass after the file is back."""
    from datetime import timedelta

    from nurture.sending.outcomes import RENDER_RETRY

    templates = tmp_path / "templates"
    import shutil

    from conftest import TEMPLATES
    shutil.copytree(TEMPLATES, templates)
    rt = runtime_for(tmp_path, database_url, plain_server, templates_dir=str(templates), max_attempts="3")
    held = confirmed(rt.sessions, "held@example.com", T0)
    with transaction(rt.sessions) as session:
        outbox.enqueue(session, subscriber_id=held, key="bcast:7", template="newsletter/gone.html.j2",
                       due_at=T0, now=T0)
    now = T0
    for _ in range(8):  # far more passes than max_attempts, each after the hold
        summary = rt.sender().run_pass(now)
        assert "newsletter/gone.html.j2" in summary.broken
        now += RENDER_RETRY
    with rt.sessions() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.key == "bcast:7"))
    assert row.state is OutboxState.retry and row.attempts == 0 and "render error" in row.last_error
    assert row.due_at <= now  # held at the steady pace, not pushed out by an exponential backoff
    (templates / "newsletter" / "gone.html.j2").write_text(
        (templates / "newsletter" / "2026-12-winter.html.j2").read_text(encoding="utf-8"), encoding="utf-8")
    summary = rt.sender().run_pass(now + timedelta(seconds=1))
    assert not summary.broken
    with rt.sessions() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.key == "bcast:7"))
    assert row.state is OutboxState.sent and row.attempts == 1
    assert [m.rcpt_tos[0] for m in plain_server.handler.messages].count("held@example.com") >= 1


def test_a_message_that_cannot_be_built_for_its_address_fails_alone_and_is_not_held_as_a_template_error(
        tmp_path, database_url, plain_server):
    """Only the template's own faults are held indefinitely; an address the message cannot carry
    (here one stored with a comma, as an old import might have left it) is this message's fault:
    retried with the usual backoff, then failed, and no template is named as broken."""
    from datetime import timedelta

    from sqlalchemy import update

    from nurture.models import Subscriber

    rt = runtime_for(tmp_path, database_url, plain_server, max_attempts="2")
    odd = confirmed(rt.sessions, "odd@example.com", T0)
    confirmed(rt.sessions, "fine@example.com", T0)
    with transaction(rt.sessions) as session:
        session.execute(update(Subscriber).where(Subscriber.id == odd).values(email="odd,one@example.com"))
    first = rt.sender().run_pass(T0)
    assert first.sent == 1 and first.retried == 1 and not first.broken
    second = rt.sender().run_pass(T0 + timedelta(days=1))
    assert second.failed >= 1 and not second.broken
    with rt.sessions() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.subscriber_id == odd,
                                                         OutboxMessage.key.startswith("seq:")))
    assert row.state is OutboxState.failed and row.last_error.startswith("build error: HeaderInjection")
