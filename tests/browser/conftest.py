"""A real server and a real browser: uvicorn on a free loopback port, Debian's chromium via Playwright.

The server runs the real app on a migrated SQLite file with a Maildir outbox, and its base URL is
its own address, so the links in the emails it sends lead back to it. Chromium is never downloaded
(`playwright install` is not used): where /usr/bin/chromium is missing the tests skip, or fail when
NURTURE_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import email
import email.utils
import mailbox
import os
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import uvicorn
from conftest import make_settings  # tests/conftest.py: this directory is a package
from fastapi import FastAPI

from nurture.migrate import upgrade
from nurture.runtime import Runtime
from nurture.web import create_app

CHROMIUM = Path(os.environ.get("NURTURE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    outbox_dir: Path
    app: FastAPI

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the dispatcher has sent what the last request asked for."""
        assert self.app.state.dispatcher.wait_idle(timeout), "the dispatcher did not finish in time"

    def mails(self) -> list[EmailMessage]:
        """Every message in the Maildir outbox, oldest first."""
        box = mailbox.Maildir(self.outbox_dir, create=False) if (self.outbox_dir / "new").exists() else None
        if box is None:
            return []
        messages = [email.message_from_bytes(box.get_bytes(key), policy=policy.default) for key in box.keys()]
        return sorted(messages, key=lambda m: email.utils.parsedate_to_datetime(m["Date"]))

    def wait_for_mail(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """The outbox once it holds at least ``count`` messages."""
        deadline = time.monotonic() + timeout
        while True:
            self.wait_idle(timeout)
            messages = self.mails()
            if len(messages) >= count or time.monotonic() > deadline:
                assert len(messages) >= count, [m["Subject"] for m in messages]
                return messages
            time.sleep(0.05)


def _free_socket() -> socket.socket:
    # Bind first and hand the socket to uvicorn: no window in which another process takes the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def live_server(tmp_path):
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    database_url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    upgrade(database_url)
    settings = make_settings(tmp_path, database_url, base_url=url)
    runtime = Runtime(settings)
    app = create_app(runtime)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    try:
        _wait_until_healthy(url, thread)
        yield LiveServer(url=url, runtime=runtime, outbox_dir=Path(settings.outbox_dir), app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        runtime.close()
    assert not thread.is_alive(), "the live server did not shut down"


def _wait_until_healthy(url: str, thread: threading.Thread, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            pytest.fail("the live server stopped during startup")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"the live server did not answer {url}/healthz within {timeout} s")


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("NURTURE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required here: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """``new_page(**context_options)``: a page in a fresh context (own cookies, time zone, viewport)."""
    contexts, errors = [], []

    def make(**options):
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        # CSP violations and script errors show up only in the console: treat them as failures.
        # ("Failed to load resource" is the browser noting a 404/410 page the test asked for.)
        page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
                and errors.append(m.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == [], "errors in the browser console"


@pytest.fixture
def page(new_page):
    return new_page()
