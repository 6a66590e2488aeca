"""`nurture serve` as a real process (real uvicorn on a free loopback port, a real SQLite file):
what only shows with a real server in front of the app, the event loop and forwarded headers."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import SECRET, TEMPLATES

HOLD = 4.0  # seconds the database write lock is held by another connection
FAST = 1.0  # what "still answers at once" means, generously, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(tmp_path: Path, **settings: str) -> Iterator[tuple[str, Path]]:
    """`nurture serve` with its own database file; yields (base URL, database path)."""
    database = tmp_path / "subscribers.db"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env |= {
        "NURTURE_DATABASE_URL": f"sqlite:///{database}",
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
        "NURTURE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NURTURE_HOST": "127.0.0.1",
        "NURTURE_PORT": str(port),
        "NURTURE_LOG_LEVEL": "WARNING",
        **{f"NURTURE_{k.upper()}": v for k, v in settings.items()},
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "nurture", "serve"], cwd=tmp_path, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, tmp_path / "serve.log")
        yield base, database
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_up(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nurture serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"nurture serve did not answer within 30 s:\n{log.read_text()}")


def signup(base: str, address: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/subscribe", json={"email": address, "consent": True},
                      headers={"user-agent": "pytest", **headers}, timeout=30)


def ledger_ips(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [ip for (ip,) in connection.execute("SELECT ip FROM consent_events ORDER BY id")]


def timed_get(url: str) -> tuple[int, float]:
    start = time.monotonic()
    status = httpx.get(url, timeout=30).status_code
    return status, time.monotonic() - start


# ---------------------------------------------------------------------------------- the event loop

def test_a_signup_waiting_on_the_database_does_not_hold_up_other_requests(tmp_path):
    with serve(tmp_path) as (base, database):
        locker = sqlite3.connect(database, isolation_level=None, timeout=0, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as another process would hold it
        release = threading.Timer(HOLD, locker.execute, args=("ROLLBACK",))
        release.start()
        try:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(signup, base, "waiting@example.com")
                time.sleep(0.5)  # the signup is now inside the server, waiting for the lock
                answers = [(path, *timed_get(base + path)) for path in ("/", "/healthz", "/")]
                still_waiting = not pending.done()
                response = pending.result(timeout=30)
        finally:
            release.join()
            locker.close()
        for path, status, seconds in answers:
            assert status == 200 and seconds < FAST, f"GET {path} took {seconds:.2f} s while a signup waited"
        assert still_waiting, "the signup did not wait for the lock, so this proved nothing"
        assert response.status_code == 202  # and the waiting signup went through once the lock was free
        assert ledger_ips(database) == ["127.0.0.1"]


# ------------------------------------------------------------------------------ forwarded headers

def test_a_forwarded_for_header_from_a_client_that_is_not_a_trusted_proxy_is_ignored(tmp_path):
    with serve(tmp_path, subscribe_rate="2/minute") as (base, database):
        codes = [signup(base, f"spoof{i}@example.com", **{"x-forwarded-for": f"198.51.100.{i}"}).status_code
                 for i in range(1, 4)]
    assert codes == [202, 202, 429]  # a new made-up address per request does not escape the limit
    assert ledger_ips(database) == ["127.0.0.1", "127.0.0.1"]  # the real peer, not what it claimed


def test_a_forwarded_for_header_from_a_trusted_proxy_names_the_client(tmp_path):
    with serve(tmp_path, subscribe_rate="2/minute", trusted_proxies="127.0.0.0/8, 10.0.0.1") as (base, database):
        # A client's own X-Forwarded-For is kept by the proxy, which appends the address it saw.
        codes = [signup(base, f"via{i}@example.com", **{"x-forwarded-for": f"192.0.2.66, 198.51.100.{i}"})
                 .status_code for i in (1, 1, 1, 2)]
    assert codes == [202, 202, 429, 202]  # the limit is per real client behind the proxy
    assert ledger_ips(database) == ["198.51.100.1", "198.51.100.1", "198.51.100.2"]
