"""`nurture serve` as a real process (real uvicorn on a free loopback port, a real SQLite file):
what only shows with a real server in front of the app, the event loop and forwarded headers."""

from __future__ import annotations

import os
import signal
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
    """`nurture serve` with its own database file; yields (base URL, database path). The process
    is ``serve.process`` meanwhile."""
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
    serve.process = process
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


# ------------------------------------------------------------------------ signups committed together

def counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        one = lambda sql: connection.execute(sql).fetchone()[0]  # noqa: E731
        return {"subscribers": one("SELECT count(*) FROM subscribers"),
                "ledger": one("SELECT count(*) FROM consent_events WHERE kind = 'signup' AND wording IS NOT NULL"),
                "confirmations": one("SELECT count(*) FROM outbox WHERE key LIKE 'sys:confirm:%'"),
                "sent": one("SELECT count(*) FROM outbox WHERE state = 'sent'")}


def test_concurrent_signups_each_make_one_subscriber_one_ledger_row_and_one_confirmation(tmp_path):
    """Many connections at once, so the server writes them in groups; some addresses sent from two
    connections at the same instant, so a group holds the same address twice."""
    threads, each, twins = 16, 12, 6
    start = threading.Barrier(threads)
    with serve(tmp_path, subscribe_rate="1000000/second") as (base, database):
        def client(number: int) -> list[int]:
            codes = []
            with httpx.Client(base_url=base, timeout=30, headers={"user-agent": "pytest"}) as http:
                start.wait()
                for i in range(each):
                    codes.append(http.post("/subscribe", json={"email": f"c{number}-{i}@example.com",
                                                               "consent": True}).status_code)
                    if i < twins:  # threads 2k and 2k+1 race for the same address
                        codes.append(http.post("/subscribe", json={"email": f"twin{number // 2}-{i}@example.com",
                                                                   "consent": True}).status_code)
            return codes

        with ThreadPoolExecutor(threads) as pool:
            codes = [code for result in pool.map(client, range(threads)) for code in result]
        distinct = threads * each + threads // 2 * twins
        deadline = time.monotonic() + 30
        while counts(database)["sent"] < distinct and time.monotonic() < deadline:
            time.sleep(0.2)
        found = counts(database)
    assert codes == [202] * len(codes)
    assert found == {"subscribers": distinct, "ledger": len(codes), "confirmations": distinct, "sent": distinct}
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM (SELECT subscriber_id FROM outbox "
                                  "GROUP BY subscriber_id HAVING count(*) > 1)").fetchone()[0] == 0


def test_a_server_killed_during_signups_never_answered_202_for_a_row_that_is_not_there(tmp_path):
    accepted: list[str] = []
    failed = []
    stop = threading.Event()
    with serve(tmp_path, subscribe_rate="1000000/second") as (base, database):
        process = serve.process

        def client(number: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    address = f"k{number}-{i}@example.com"
                    try:
                        response = http.post("/subscribe", json={"email": address, "consent": True})
                    except httpx.TransportError as exc:
                        failed.append(exc)
                        return
                    if response.status_code == 202:
                        accepted.append(address)

        workers = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 20
        while len(accepted) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # mid-load: groups queued, being written, being answered
        process.wait()
        stop.set()
        for worker in workers:
            worker.join(30)
    assert len(accepted) >= 300 and failed, "the server was not killed in the middle of the load"
    with sqlite3.connect(database) as connection:
        stored = {email for (email,) in connection.execute(
            "SELECT s.email FROM subscribers s JOIN consent_events c ON c.subscriber_id = s.id "
            "JOIN outbox o ON o.subscriber_id = s.id AND o.key = 'sys:confirm:1'")}
    missing = [address for address in accepted if address not in stored]
    assert missing == [], f"{len(missing)} signups answered 202 have no complete rows: {missing[:5]}"


# ------------------------------------------------------------------- confirmations from a process

def _children(pid: int) -> dict[int, str]:
    """The server's child processes by pid, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == pid:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                pass
    return found


def _confirmations(tmp_path: Path) -> list[str]:
    new = tmp_path / "outbox" / "new"
    return [p.read_bytes().decode() for p in new.iterdir()] if new.is_dir() else []


def _wait_for(condition, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return condition()


def test_confirmations_are_sent_by_a_process_of_their_own_which_comes_back_if_it_dies(tmp_path):
    """`nurture serve` sends confirmations from a child process (the event loop keeps its own
    interpreter lock); if that process dies, the next signup starts another and nothing is lost."""
    with serve(tmp_path) as (base, _database):
        assert signup(base, "first@example.com").status_code == 202
        assert _wait_for(lambda: len(_confirmations(tmp_path)) == 1), "no confirmation arrived"
        [child] = [pid for pid, command in _children(serve.process.pid).items() if "spawn_main" in command]
        os.kill(child, signal.SIGKILL)
        _wait_for(lambda: child not in _children(serve.process.pid), 5)
        assert signup(base, "second@example.com").status_code == 202
        arrived = _wait_for(lambda: len(_confirmations(tmp_path)) == 2)
        assert arrived, "the second confirmation never arrived after the sending process died"
        assert sum("To: second@example.com" in m for m in _confirmations(tmp_path)) == 1
        assert [pid for pid, command in _children(serve.process.pid).items() if "spawn_main" in command] != [child]
    # and it ends with the server
    assert serve.process.poll() is not None and not _children(serve.process.pid)
