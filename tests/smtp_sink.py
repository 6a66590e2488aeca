"""A real SMTP server (aiosmtpd) on loopback for tests, with scripted replies per recipient."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)  # when the server took it (rate measurements)


@dataclass
class ScriptedHandler:
    """Accepts everything unless a reply is scripted for a recipient.

    ``script[address]`` is a list of replies used one per delivery attempt: an SMTP reply line
    such as ``"451 4.3.0 try later"`` (given at DATA), ``"550 5.1.1 no such user"`` (at RCPT),
    or ``"drop"`` to take the message and close the connection without replying.
    """

    messages: list[Received] = field(default_factory=list)
    script: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds to wait before answering DATA, to simulate a real server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts[address] += 1
            pending = self.script.get(address)
            if pending and pending[0].startswith("55"):  # address refused: answer at RCPT
                return pending.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        address = envelope.rcpt_tos[0]
        with self.lock:
            pending = self.script.get(address)
            reply = pending.pop(0) if pending else None
        if reply == "drop":
            with self.lock:
                self.messages.append(_received(envelope))
            server.transport.close()
            return "250 OK"
        if reply:
            return reply
        with self.lock:
            self.messages.append(_received(envelope))
        return "250 2.0.0 OK queued"

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]


def _received(envelope) -> Received:
    return Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, list(envelope.mail_options))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (self.user, self.password)
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself


class SmtpServer:
    def __init__(self, port: int | None = None, *, smtputf8: bool = False,
                 credentials: tuple[str, str] | None = None) -> None:
        self.handler = ScriptedHandler()
        self.port = port or free_port()
        # AUTH (PLAIN, LOGIN) is offered only when ``credentials`` are given, and then over plain
        # text too, as a test has no certificate.
        auth = {} if credentials is None else {"authenticator": _Authenticator(*credentials),
                                               "auth_require_tls": False}
        # Off by default, as on many relays: a UTF-8 local part then has no way through.
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8,
                                     **auth)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
