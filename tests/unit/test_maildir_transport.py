"""The Maildir transport: parallel writers, every message a complete file in new/, read back by the
standard library's Maildir reader and parsed by the email package."""

from __future__ import annotations

import mailbox
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy

from nurture.sending.transports import MaildirTransport


def message(i: int) -> bytes:
    return (f"From: care@clinic.example\r\nTo: r{i}@example.com\r\nSubject: note {i}\r\n\r\n"
            + "body line\r\n" * 2000).encode()


def test_parallel_writers_leave_every_message_whole_and_nothing_in_tmp(tmp_path):
    transport = MaildirTransport(tmp_path / "outbox")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: transport.send("care@clinic.example", f"r{i}@example.com", message(i)),
                                range(400)))
    assert {r.code for r in replies} == {250}
    assert not list((tmp_path / "outbox" / "tmp").iterdir())  # written, then renamed: never half a file in new/
    box = mailbox.Maildir(tmp_path / "outbox", factory=None, create=False)
    parsed = [message_from_bytes(box.get_bytes(key), policy=policy.default) for key in box.keys()]
    assert sorted(m["To"] for m in parsed) == sorted(f"r{i}@example.com" for i in range(400))
    assert all(m["Delivered-To"] == m["To"] and m["Return-Path"] == "<care@clinic.example>" for m in parsed)
    assert all(m.get_content().count("body line") == 2000 for m in parsed)


def test_the_reply_names_the_file(tmp_path):
    transport = MaildirTransport(tmp_path / "outbox")
    reply = transport.send("care@clinic.example", "r@example.com", message(1))
    name = reply.text.rsplit(" as ", 1)[1]
    assert (tmp_path / "outbox" / "new" / name).is_file()
