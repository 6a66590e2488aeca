"""Cost that follows the work: a sending pass with nothing due, and a confirmation's welcome email,
as the list grows.

    python bench/bench_scale.py [--sizes 10000,100000,1000000] [--confirmations 3]

For each N, seeds a fresh SQLite file with N confirmed subscribers one day into the sequence (their
welcome sent yesterday, in the outbox and the events, the next step due tomorrow), then measures:
  idle pass      an in-process sending pass at a moment nothing is due (median of 5);
  full replan    the same pass after every stored instant was reset, which is what an edit of the
                 sequence costs once, and what every pass cost before the due index;
  confirm->welcome  through a running `nurture serve`: sign up, follow the confirmation link, and
                 time from the confirming POST until the welcome email is in the Maildir (median).
Prints a table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates" / "emails"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
SECRET = "bench-secret"


def environ(db: Path, workdir: Path, port: int = 8000) -> dict[str, str]:
    return {"NURTURE_DATABASE_URL": f"sqlite:///{db}", "NURTURE_SECRET_KEY": SECRET,
            "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "NURTURE_OUTBOX_DIR": str(workdir / "outbox"),
            "NURTURE_PORT": str(port), "NURTURE_BASE_URL": f"http://127.0.0.1:{port}",
            "NURTURE_SEND_WINDOW": "00:00-24:00", "NURTURE_LOG_LEVEL": "WARNING"}


def seed(db: Path, n: int) -> None:
    """N people one day into the sequence, written with plain executemany (fast seeding only)."""
    from nurture.config import load_settings
    from nurture.migrate import upgrade
    from nurture.sending.journey import Planner

    upgrade(f"sqlite:///{db}")
    settings = load_settings(environ(db, db.parent), env_file=None)
    planner = Planner.from_settings(settings)
    sequence = planner.sequence()
    welcome = sequence.steps[0]
    yesterday = _text(NOW - timedelta(days=1))
    tomorrow = _text(NOW + timedelta(days=1))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for start in range(0, n, 50_000):
        ids = range(start + 1, min(n, start + 50_000) + 1)
        conn.executemany(
            "INSERT INTO subscribers (id, email, email_hash, first_name, timezone, status, wants_series, "
            "wants_newsletter, sequence, tags, created_at, updated_at, confirmed_at, status_changed_at, "
            "confirm_round, next_due_at) VALUES (?, ?, ?, 'N', 'America/Chicago', 'confirmed', 1, 1, ?, '[]', "
            "?, ?, ?, ?, 1, ?)",
            [(i, f"r{i}@example.com", f"bench{i:064d}"[-64:], settings.sequence, yesterday, yesterday, yesterday,
              yesterday, tomorrow) for i in ids])
        conn.executemany(
            "INSERT INTO outbox (id, subscriber_id, key, template, state, due_at, created_at, attempts, unknowns, "
            "sent_at, track_opens) VALUES (?, ?, ?, ?, 'sent', ?, ?, 1, 0, ?, 0)",
            [(i, i, f"seq:{settings.sequence}:{welcome.key}", welcome.template, yesterday, yesterday, yesterday)
             for i in ids])
        conn.executemany("INSERT INTO events (kind, created_at, outbox_id, subscriber_id) VALUES ('sent', ?, ?, ?)",
                         [(yesterday, i, i) for i in ids])
        conn.commit()
    conn.execute("INSERT INTO planner_state (sequence, fingerprint) VALUES (?, ?)",
                 (settings.sequence, planner.fingerprint(sequence)))
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def _text(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def pass_seconds(db: Path, *, replan: bool) -> tuple[float, int]:
    """Seconds of one in-process pass at NOW (median of 5 unless ``replan``), and what it planned."""
    from sqlalchemy import update

    from nurture.config import load_settings
    from nurture.db import transaction
    from nurture.models import UNPLANNED, Subscriber
    from nurture.runtime import Runtime

    rt = Runtime(load_settings(environ(db, db.parent), env_file=None))
    sender = rt.sender()
    times, planned = [], 0
    for _ in range(1 if replan else 5):
        if replan:
            with transaction(rt.sessions) as session:
                session.execute(update(Subscriber).values(next_due_at=UNPLANNED))
        start = time.perf_counter()
        summary = sender.run_pass(NOW)
        times.append(time.perf_counter() - start)
        planned += summary.planned
    rt.close()
    return statistics.median(times), planned


def confirm_to_welcome(db: Path, workdir: Path, count: int) -> list[float]:
    port = _free_port()
    env = {**os.environ, **environ(db, workdir, port)}
    server = subprocess.Popen([sys.executable, "-m", "nurture", "serve"], cwd=workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(f"{base}/healthz"), 60)
        delays = []
        for i in range(count):
            address = f"newcomer{i}@example.com"
            _post(f"{base}/subscribe", json.dumps({"email": address, "consent": True}).encode(), "application/json")
            confirmation = _wait(lambda: _mail_to(workdir, address, "/confirm/"), 30)
            token = re.search(rb"/confirm/([A-Za-z0-9_.=-]+)", confirmation).group(1).decode()
            start = time.perf_counter()
            _post(f"{base}/confirm/{token}", b"", "application/x-www-form-urlencoded")
            _wait(lambda: _mail_to(workdir, address, "List-Unsubscribe"), 60)
            delays.append(time.perf_counter() - start)
        return delays
    finally:
        server.terminate()
        server.wait(timeout=30)


def _mail_to(workdir: Path, address: str, marker: str) -> bytes | None:
    new = workdir / "outbox" / "new"
    if not new.exists():
        return None
    for path in new.iterdir():
        data = path.read_bytes()
        if f"Delivered-To: {address}".encode() in data and marker.encode() in data:
            return data.replace(b"=\r\n", b"")
    return None


def _wait(probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.005)
    raise SystemExit("timed out waiting")


def _get(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--confirmations", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nurture-scale-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            workdir = Path(tmp) / str(n)
            workdir.mkdir()
            db = workdir / "subscribers.db"
            started = time.perf_counter()
            seed(db, n)
            seeded = time.perf_counter() - started
            idle, planned = pass_seconds(db, replan=False)
            assert planned == 0, f"the idle pass planned {planned}"
            welcome = confirm_to_welcome(db, workdir, args.confirmations)
            replan, _ = pass_seconds(db, replan=True)
            rows.append((n, idle, replan, statistics.median(welcome), max(welcome), seeded))
            print(f"N={n:,} done (seeded in {seeded:.0f} s)", file=sys.stderr)
    first = rows[0]
    print(f"\nscale: SQLite, N confirmed subscribers one day into the sequence, {os.cpu_count()} cores\n")
    print(f"{'N':>9} | {'idle pass ms':>12} | {'x at ' + format(first[0], ','):>11} | {'full replan s':>13} | "
          f"{'confirm->welcome ms':>19} | {'worst ms':>8}")
    print("-" * 88)
    for n, idle, replan, welcome, worst, _ in rows:
        print(f"{n:>9,} | {idle * 1000:>12.1f} | {idle / first[1]:>11.2f} | {replan:>13.2f} | "
              f"{welcome * 1000:>19.0f} | {worst * 1000:>8.0f}")
    print("\ntargets: idle pass at the largest N within 1.5x of the smallest; confirm->welcome under 1 s")


if __name__ == "__main__":
    main()
