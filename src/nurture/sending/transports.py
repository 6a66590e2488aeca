"""Where messages go: a Transport takes envelope and bytes and says what the server replied.

``SmtpPool`` keeps a few connections open and reuses them; ``MaildirTransport`` writes to a local
Maildir (the default, so development never mails anyone); ``MemoryTransport`` is the in-memory
fake for unit tests. All three go through the same sender code.
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from nurture.addresses import UnencodableAddress, wire_address


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class Unreachable(Exception):
    """The server could not be reached at all: nothing was sent; try the whole run later."""


class NoReply(Exception):
    """The message data was (perhaps) transmitted but no reply came: it may or may not have arrived."""


class Undeliverable(Exception):
    """This one message can never go through this server as it is (an address with a UTF-8 local
    part, and a server without SMTPUTF8): fail it alone, with this reason."""


class Transport(Protocol):
    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        """Hand one message (bytes with CRLF line ends) over. Returns the server's final reply (2xx, 4xx or 5xx);
        raises Unreachable before any data went out, NoReply after, Undeliverable when this one
        message cannot go; any other exception is this message's problem alone."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool
    timeout: float

    @classmethod
    def from_url(cls, url: str, timeout: float) -> SmtpConfig:
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if implicit else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
            starttls=options.get("starttls", "0").lower() in ("1", "true", "yes", "on"),
            timeout=timeout,
        )


class SmtpPool:
    """Up to ``size`` reused SMTP connections, safe to share between sending threads."""

    def __init__(self, config: SmtpConfig, size: int = 4) -> None:
        self.config = config
        self.size = size
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        try:
            if c.implicit_tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout,
                                                      context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            conn.ehlo()
            if c.starttls:
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if c.username:
                conn.login(c.username, c.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise Unreachable(f"cannot reach SMTP server {c.host}:{c.port}: {exc}") from None
        return conn

    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        envelope = _Envelope.of(sender, recipient)
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                try:
                    reply = self._send_on(conn, envelope, data)
                except _Reconnect:
                    # The server closed an idle connection before we sent anything: one fresh try.
                    _quietly_close(conn)
                    conn = self._connect()
                    try:
                        reply = self._send_on(conn, envelope, data)
                    except _Reconnect as exc:
                        raise Unreachable(str(exc)) from None
            except Undeliverable:
                self._idle.put(conn)  # nothing was started on it: still good for the next message
                raise
            except BaseException:
                # NoReply, or anything unforeseen: the connection is in an unknown state.
                _quietly_close(conn)
                raise
            self._idle.put(conn)
            return reply

    @staticmethod
    def _send_on(conn: smtplib.SMTP, envelope: _Envelope, data: bytes) -> Reply:
        mail_options = ""
        if envelope.needs_smtputf8:
            if not conn.has_extn("smtputf8"):
                raise Undeliverable(
                    f"the mail server does not offer SMTPUTF8, which the address {envelope.recipient} "
                    "needs (its local part is not ASCII; RFC 6531)"
                )
            mail_options = " SMTPUTF8" + (" BODY=8BITMIME" if conn.has_extn("8bitmime") else "")
        # smtplib encodes commands as ASCII unless told otherwise; only this transaction is UTF-8.
        conn.command_encoding = "utf-8" if envelope.needs_smtputf8 else "ascii"
        try:
            return SmtpPool._transaction(conn, envelope, mail_options, data)
        finally:
            conn.command_encoding = "ascii"

    @staticmethod
    def _transaction(conn: smtplib.SMTP, envelope: _Envelope, mail_options: str, data: bytes) -> Reply:
        try:
            # Plain commands rather than smtplib's mail()/rcpt(), which re-parse both addresses
            # with the email package on every message.
            code, text = conn.docmd(f"MAIL FROM:<{envelope.sender}>{mail_options}")
            if code != 250:
                conn.rset()
                return Reply(code, _text(text))
            code, text = conn.docmd(f"RCPT TO:<{envelope.recipient}>")
            if code not in (250, 251):
                conn.rset()
                return Reply(code, _text(text))
            code, text = conn.docmd("DATA")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Reconnect(str(exc)) from None
        if code != 354:
            conn.rset()
            return Reply(code, _text(text))
        # From here on the server may have the message: a lost reply is "unknown", not "failed".
        try:
            conn.send(_dot_stuffed(data))
            code, text = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError, socket.timeout) as exc:
            raise NoReply(f"no reply after DATA: {exc}") from None
        return Reply(code, _text(text))

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                _quietly_close(conn)


class _Reconnect(Exception):
    pass


@dataclass(frozen=True)
class _Envelope:
    sender: str
    recipient: str
    needs_smtputf8: bool

    @classmethod
    def of(cls, sender: str, recipient: str) -> _Envelope:
        try:
            wire = wire_address(sender), wire_address(recipient)
        except UnencodableAddress as exc:
            raise Undeliverable(str(exc)) from None
        return cls(wire[0].text, wire[1].text, wire[0].needs_smtputf8 or wire[1].needs_smtputf8)


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: leading dots doubled, then CRLF.CRLF. ``data`` has CRLF line ends
    already (messages.build_message writes them), so no line-end rewriting is needed."""
    q = data.replace(b"\r\n.", b"\r\n..")
    if q.startswith(b"."):
        q = b"." + q
    if not q.endswith(b"\r\n"):
        q += b"\r\n"
    return q + b".\r\n"


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _quietly_close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass


class MaildirTransport:
    """Writes each message into a local Maildir (``outbox/new``): nothing leaves the machine.

    Delivered the Maildir way (a unique name in ``tmp``, written, fsynced, renamed into ``new``)
    without a lock, so sending threads write in parallel: the fsync is most of the cost of a
    message here, and it waits on the disk, not on the interpreter. (``mailbox.Maildir.add``
    took 2.5 ms a message under one lock; this takes under 1 ms, and threads overlap.)"""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        for sub in ("tmp", "new", "cur"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._count = itertools.count()  # next() is atomic under the GIL

    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        envelope = f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(self._count)}R{secrets.token_hex(4)}.{self._host}"
        tmp = self.directory / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            remaining = memoryview(envelope + data)
            while remaining:
                remaining = remaining[os.write(fd, remaining):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.directory / "new" / name)
        return Reply(250, f"2.0.0 stored in {self.directory}/new as {name}")

    def close(self) -> None:
        pass


@dataclass
class MemoryTransport:
    """Keeps messages in a list; ``replies`` scripts what the 'server' answers (default 250)."""

    sent: list[tuple[str, str, bytes]] = field(default_factory=list)
    replies: list[Reply | Exception] = field(default_factory=list)
    on_send: Callable[[str], None] | None = None

    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        if self.on_send:
            self.on_send(recipient)
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
        else:
            reply = Reply(250, "2.0.0 OK")
        if 200 <= reply.code < 300:
            self.sent.append((sender, recipient, data))
        return reply

    def close(self) -> None:
        pass
