"""The /admin lockout holds for all web processes on one database (two apps, with two runtimes as
two web workers have, over one SQLite file or PostgreSQL schema), and the rules of the windows it
is counted in."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, timezone

from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import make_settings
from factories import Clock
from nurture.db import make_engine, session_factory
from nurture.models import RateWindow
from nurture.runtime import Runtime
from nurture.sending.transports import MemoryTransport
from nurture.web import create_app
from nurture.web.rate_windows import RateWindows

START = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
CLIENT = ("198.51.100.7", 40000)


def two_workers(stack: ExitStack, tmp_path, database_url, **settings) -> list[TestClient]:
    clients = []
    for _ in range(2):
        runtime = Runtime(make_settings(tmp_path, database_url, **settings), transport_override=MemoryTransport())
        stack.callback(runtime.close)
        clients.append(stack.enter_context(
            TestClient(create_app(runtime, clock=Clock(START), dispatch=False), client=CLIENT)))
    return clients


def test_the_admin_lockout_counts_wrong_passwords_at_every_worker(tmp_path, database_url):
    with ExitStack() as stack:
        workers = two_workers(stack, tmp_path, database_url, admin_password="right password")
        for i in range(10):  # five at each
            assert workers[i % 2].get("/admin", auth=("admin", "guess")).status_code == 401
        for worker in workers:
            locked = worker.get("/admin", auth=("admin", "right password"))
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0


def test_a_window_ends_a_period_after_its_first_hit_and_passed_windows_are_swept(database_url):
    sessions = session_factory(make_engine(database_url))
    now = [1_000_000.0]
    first, second = (RateWindows(sessions, "signup", 3, 60, clock=lambda: now[0]) for _ in range(2))
    assert [first.hit("a"), second.hit("a"), first.hit("a")] == [0, 0, 0]
    now[0] += 20
    assert second.hit("a") == 40 and first.wait("a") == 40
    now[0] += 40
    assert first.hit("a") == 0 and first.wait("a") == 0  # a new window, opened by this hit
    first.hit("gone")
    now[0] += 61  # both windows passed: the next hit sweeps them
    second.hit("b")
    with sessions() as session:
        assert session.scalars(select(RateWindow.key)).all() == ["b"]
    sessions.engine.dispose()


def test_the_limit_lets_requests_through_when_the_database_is_away(tmp_path):
    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    windows = RateWindows(sessions, "signup", 1, 60)
    assert windows.hit("a") == 0 and windows.hit("a") == 0 and windows.wait("a") == 0
