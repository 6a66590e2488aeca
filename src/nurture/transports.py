"""Where messages go: a Transport takes envelope and bytes and says what the server replied.

``SmtpPool`` keeps a few connections open and reuses them; ``MaildirTransport`` writes to a local
Maildir (the default, so development never mails anyone); ``MemoryTransport`` is the in-memory
fake for unit tests. All three go through the same sender code.
"""

from __future__ import annotations

import mailbox
import queue
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit


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


class Transport(Protocol):
    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        """Hand one message (bytes with CRLF line ends) over. Returns the server's final reply (2xx, 4xx or 5xx);
        raises Unreachable before any data went out, NoReply after."""

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
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                reply = self._send_on(conn, sender, recipient, data)
            except _Reconnect:
                # The server closed an idle connection before we sent anything: one fresh try.
                _quietly_close(conn)
                conn = self._connect()
                try:
                    reply = self._send_on(conn, sender, recipient, data)
                except _Reconnect as exc:
                    _quietly_close(conn)
                    raise Unreachable(str(exc)) from None
                except NoReply:
                    _quietly_close(conn)
                    raise
            except NoReply:
                _quietly_close(conn)
                raise
            self._idle.put(conn)
            return reply

    @staticmethod
    def _send_on(conn: smtplib.SMTP, sender: str, recipient: str, data: bytes) -> Reply:
        try:
            # Plain commands rather than smtplib's mail()/rcpt(), which re-parse both addresses
            # with the email package on every message.
            code, text = conn.docmd(f"MAIL FROM:<{sender}>")
            if code != 250:
                conn.rset()
                return Reply(code, _text(text))
            code, text = conn.docmd(f"RCPT TO:<{recipient}>")
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
    """Writes each message into a local Maildir (``outbox/new``): nothing leaves the machine."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._maildir = mailbox.Maildir(self.directory, create=True)
        self._lock = threading.Lock()

    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        envelope = f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()
        with self._lock:
            key = self._maildir.add(envelope + data)
        return Reply(250, f"2.0.0 stored in {self.directory}/new as {key}")

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
