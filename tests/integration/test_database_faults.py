"""The database connection drops in the middle of a pass (PostgreSQL's pg_terminate_backend, as
a failover or a restart does): the pass goes on over fresh connections, every message goes once,
and the command never ends in a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from conftest import SECRET, TEMPLATES
from factories import bulk_confirmed
from nurture.db import make_engine, session_factory
from nurture.models import OutboxState
from tests.integration.test_concurrent_senders import T0, copies_by_recipient, states

pytestmark = pytest.mark.postgres
APP = "nurture-sender-under-test"


def send_due(tmp_path, url, smtp_url, now, **settings):
    separator = "&" if "?" in url else "?"
    env = {**os.environ, "NURTURE_DATABASE_URL": f"{url}{separator}application_name={APP}",
           "NURTURE_SMTP_URL": smtp_url, "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
           "NURTURE_SMTP_POOL_SIZE": "2", **{f"NURTURE_{k.upper()}": str(v) for k, v in settings.items()}}
    return subprocess.Popen([sys.executable, "-m", "nurture", "send-due", "--now", now.isoformat()],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Terminator(threading.Thread):
    """Terminates the sender's database connections every ``every`` seconds until stopped."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url.split("?")[0], isolation_level="AUTOCOMMIT")
        self.every = every
        self.stop = threading.Event()
        self.terminated = 0

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.wait(self.every):
                self.terminated += conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :app"
                ), {"app": APP}).scalar_one()
        self.engine.dispose()


def test_connections_killed_during_a_pass_duplicate_nothing_and_lose_nothing(tmp_path, postgres_url, smtp_server):
    count = 400
    bulk_confirmed(session_factory(make_engine(postgres_url)), count, T0 - timedelta(minutes=1))
    smtp_server.handler.delay = 0.003  # the pass lasts long enough to be cut many times
    process = send_due(tmp_path, postgres_url, smtp_server.url, T0, lease_seconds=3)
    deadline = time.monotonic() + 60
    while not smtp_server.handler.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    killer = Terminator(postgres_url, every=0.15)
    killer.start()
    out, err = process.communicate(timeout=300)
    killer.stop.set()
    killer.join()
    assert killer.terminated >= 5, "the pass ended before its connections could be cut"
    print(f"connections terminated during the pass: {killer.terminated}")
    assert "Traceback" not in err
    assert process.returncode == 0, err  # every drop was survived on a fresh connection
    # A claim whose commit was cut may have left rows leased to nobody who knows them: they wait
    # for their lease (3 s), then a later pass sends them. Nothing is lost, nothing goes twice.
    by = after_the_lease(tmp_path, postgres_url, smtp_server, count, lease=3)
    assert {r: ids for r, ids in by.items() if len(ids) > 1} == {}


def after_the_lease(tmp_path, url, smtp_server, count, *, lease: float) -> dict[str, list[str]]:
    """Once the leases ran out, a healthy pass sends what is left: everyone has their email
    (each repeat the same message), every row is sent. Returns the Message-IDs by recipient."""
    time.sleep(lease + 0.2)
    final = send_due(tmp_path, url, smtp_server.url, T0 + timedelta(minutes=1), lease_seconds=lease)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    by = copies_by_recipient(smtp_server.handler)
    assert len(by) == count
    assert all(len(set(ids)) == 1 for ids in by.values())
    assert states(url) == {OutboxState.sent: count}
    return by


def test_a_database_that_stays_down_ends_the_pass_with_one_line(tmp_path, postgres_url, smtp_server):
    """Past its patience the pass stops, says in one line what may go twice, and leaves what it
    delivered leased (never released for an immediate resend)."""
    from tcp_proxy import TcpProxy

    count = 200
    bulk_confirmed(session_factory(make_engine(postgres_url)), count, T0 - timedelta(minutes=1))
    smtp_server.handler.delay = 0.003
    proxy = TcpProxy("127.0.0.1", 5432)
    through_proxy = postgres_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    assert through_proxy != postgres_url
    process = send_due(tmp_path, through_proxy, smtp_server.url, T0, lease_seconds=2, db_patience_seconds=1)
    deadline = time.monotonic() + 60
    while len(smtp_server.handler.messages) < 30 and time.monotonic() < deadline:
        time.sleep(0.005)
    proxy.go_down()
    out, err = process.communicate(timeout=300)
    proxy.close()
    assert "Traceback" not in err
    assert process.returncode == 1, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "database unreachable" in lines[0], err
    # What it delivered but could not record goes again only after the lease, with the same Message-ID.
    by = after_the_lease(tmp_path, postgres_url, smtp_server, count, lease=2)
    repeated = sum(len(ids) - 1 for ids in by.values())
    print(f"database down for good: {repeated} messages repeated after the lease (bound {2 * 20})")
    assert repeated <= 2 * 20  # at most the chunk each of the two connections had in flight
