"""The transports on their own: SmtpPool against a real aiosmtpd server, MaildirTransport on disk,
MemoryTransport's scripted replies."""

from __future__ import annotations

import email
from email import policy

import pytest

from nurture.sending.transports import (
    MaildirTransport,
    MemoryTransport,
    NoReply,
    Reply,
    SmtpConfig,
    SmtpPool,
    Undeliverable,
    Unreachable,
)

from smtp_sink import SmtpServer, free_port

SENDER = "care@clinic.example"


def message(subject: str = "hello", body: str = "a line\r\n") -> bytes:
    return f"From: {SENDER}\r\nTo: someone@example.com\r\nSubject: {subject}\r\n\r\n{body}".encode()


def pool_for(server: SmtpServer, size: int = 2) -> SmtpPool:
    return SmtpPool(SmtpConfig.from_url(server.url, timeout=5), size=size)


# --------------------------------------------------------------------------- SmtpConfig

def test_config_from_url_reads_tls_credentials_and_ports() -> None:
    plain = SmtpConfig.from_url("smtp://relay.example", 3)
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls, plain.username) == ("relay.example", 25, False, False, None)
    tls = SmtpConfig.from_url("smtps://user%40x:p%2Fw@relay.example", 3)
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (465, True, "user@x", "p/w")
    assert SmtpConfig.from_url("smtp://relay.example:587?starttls=yes", 3).starttls is True
    assert SmtpConfig.from_url("smtp://relay.example:587?starttls=0", 3).starttls is False


# --------------------------------------------------------------------------- SmtpPool: replies

def test_a_message_goes_through_and_its_bytes_arrive_unchanged(smtp_server: SmtpServer) -> None:
    pool = pool_for(smtp_server)
    data = message(body="first\r\n.starts with a dot\r\n..two dots\r\n")
    reply = pool.send(SENDER, "ann@example.com", data)
    pool.close()
    assert reply.code == 250 and "queued" in reply.text
    [received] = smtp_server.handler.messages
    assert received.mail_from == SENDER and received.rcpt_tos == ["ann@example.com"]
    assert received.data == data  # dot-stuffed on the wire, unstuffed by the server: the same bytes


def test_a_temporary_refusal_at_data_is_the_reply(smtp_server: SmtpServer) -> None:
    smtp_server.handler.script["bo@example.com"] = ["451 4.3.0 try later"]
    pool = pool_for(smtp_server)
    assert pool.send(SENDER, "bo@example.com", message()) == Reply(451, "4.3.0 try later")
    assert pool.send(SENDER, "bo@example.com", message()).code == 250  # the same connection goes on
    pool.close()
    assert len(smtp_server.handler.to("bo@example.com")) == 1


def test_a_refused_recipient_is_the_reply_and_nothing_is_sent(smtp_server: SmtpServer) -> None:
    smtp_server.handler.script["gone@example.com"] = ["550 5.1.1 no such user"]
    pool = pool_for(smtp_server)
    reply = pool.send(SENDER, "gone@example.com", message())
    assert (reply.code, reply.text) == (550, "5.1.1 no such user")
    assert pool.send(SENDER, "ann@example.com", message()).code == 250  # after RSET the connection is fine
    pool.close()
    assert smtp_server.handler.to("gone@example.com") == []


# --------------------------------------------------------------------------- SmtpPool: connections

def test_a_connection_dropped_after_data_is_no_reply_and_the_next_send_reconnects(smtp_server: SmtpServer) -> None:
    smtp_server.handler.script["cy@example.com"] = ["drop"]
    pool = pool_for(smtp_server, size=1)
    with pytest.raises(NoReply, match="no reply after DATA"):
        pool.send(SENDER, "cy@example.com", message())
    assert pool._idle.empty()  # a connection in an unknown state is never reused
    assert pool.send(SENDER, "dee@example.com", message()).code == 250
    pool.close()
    assert [m.rcpt_tos for m in smtp_server.handler.messages] == [["cy@example.com"], ["dee@example.com"]]


def test_an_idle_connection_the_server_closed_is_replaced_once() -> None:
    port = free_port()
    with SmtpServer(port) as first:
        pool = pool_for(first)
        assert pool.send(SENDER, "ann@example.com", message("one")).code == 250
    assert pool._idle.qsize() == 1  # kept, but its server is gone
    with SmtpServer(port) as second:  # a restarted server: the kept connection is dead
        assert pool.send(SENDER, "ann@example.com", message("two")).code == 250
        pool.close()
        assert [email.message_from_bytes(m.data)["Subject"] for m in second.handler.messages] == ["two"]


def test_no_server_is_unreachable() -> None:
    pool = SmtpPool(SmtpConfig.from_url(f"smtp://127.0.0.1:{free_port()}", timeout=2))
    with pytest.raises(Unreachable, match="cannot reach SMTP server"):
        pool.send(SENDER, "ann@example.com", message())


def test_connections_are_reused_up_to_the_pool_size(smtp_server: SmtpServer) -> None:
    pool = pool_for(smtp_server, size=2)
    for i in range(5):
        assert pool.send(SENDER, f"r{i}@example.com", message()).code == 250
    assert pool._idle.qsize() == 1  # one sender at a time needs one connection
    pool.close()
    assert pool._idle.empty()


# --------------------------------------------------------------------------- SmtpPool: international addresses

def test_a_utf8_local_part_without_smtputf8_is_undeliverable_and_the_connection_kept(smtp_server: SmtpServer) -> None:
    pool = pool_for(smtp_server, size=1)
    assert pool.send(SENDER, "ann@example.com", message()).code == 250
    with pytest.raises(Undeliverable, match="SMTPUTF8"):
        pool.send(SENDER, "zoë@example.com", message())
    assert pool._idle.qsize() == 1  # nothing was started on it
    assert pool.send(SENDER, "bo@example.com", message()).code == 250
    pool.close()
    assert [m.rcpt_tos for m in smtp_server.handler.messages] == [["ann@example.com"], ["bo@example.com"]]


def test_a_utf8_local_part_goes_with_smtputf8_when_offered() -> None:
    with SmtpServer(smtputf8=True) as server:
        pool = pool_for(server)
        assert pool.send(SENDER, "zoë@example.com", message()).code == 250
        assert pool.send(SENDER, "ann@example.com", message()).code == 250
        pool.close()
        first, second = server.handler.messages
    assert first.rcpt_tos == ["zoë@example.com"] and "SMTPUTF8" in first.mail_options
    assert "SMTPUTF8" not in second.mail_options  # only the transaction that needs it


def test_an_international_domain_goes_as_idna(smtp_server: SmtpServer) -> None:
    pool = pool_for(smtp_server)
    assert pool.send(SENDER, "ann@bücher.example", message()).code == 250
    pool.close()
    assert smtp_server.handler.messages[0].rcpt_tos == ["ann@xn--bcher-kva.example"]


# --------------------------------------------------------------------------- MaildirTransport

def test_maildir_makes_its_folders_and_stores_the_envelope(tmp_path) -> None:
    transport = MaildirTransport(tmp_path / "box")
    assert all((tmp_path / "box" / sub).is_dir() for sub in ("tmp", "new", "cur"))
    reply = transport.send(SENDER, "ann@example.com", message())
    [stored] = list((tmp_path / "box" / "new").iterdir())
    assert reply.code == 250 and stored.name in reply.text
    parsed = email.message_from_bytes(stored.read_bytes(), policy=policy.default)
    assert parsed["Return-Path"] == f"<{SENDER}>" and parsed["Delivered-To"] == "ann@example.com"
    assert parsed["Subject"] == "hello"
    assert oct(stored.stat().st_mode & 0o777) == "0o600"


# --------------------------------------------------------------------------- MemoryTransport

def test_memory_transport_accepts_by_default_and_keeps_what_it_accepted() -> None:
    transport = MemoryTransport()
    assert transport.send(SENDER, "ann@example.com", b"x") == Reply(250, "2.0.0 OK")
    assert transport.sent == [(SENDER, "ann@example.com", b"x")]


def test_memory_transport_plays_its_script_in_order() -> None:
    seen: list[str] = []
    transport = MemoryTransport(replies=[Reply(451, "later"), Unreachable("down"), Reply(250, "ok")],
                                on_send=seen.append)
    assert transport.send(SENDER, "a@example.com", b"1").code == 451
    with pytest.raises(Unreachable):
        transport.send(SENDER, "b@example.com", b"2")
    assert transport.send(SENDER, "c@example.com", b"3") == Reply(250, "ok")
    assert seen == ["a@example.com", "b@example.com", "c@example.com"]
    assert transport.sent == [(SENDER, "c@example.com", b"3")]  # a refusal is not a delivery
