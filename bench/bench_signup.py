"""Signup load: a real `nurture serve` (uvicorn, SQLite) on loopback under wrk.

    python bench/bench_signup.py [--seconds 20] [--connections 32]

Needs wrk (Debian package `wrk`). The rate limit is raised for the run; the confirmation emails
are really sent, into a Maildir, by the server's own background thread while the load runs.
Prints signups per second, p50/p99 latency, and checks that every accepted signup is a row.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine, func, select

from nurture.models import ConsentEvent, OutboxMessage, Subscriber

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def wait_for_confirmations(db: Path, timeout: float = 120) -> float:
    """Seconds after the load stopped until every confirmation email was sent."""
    engine = create_engine(f"sqlite:///{db}")
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with engine.connect() as conn:
            waiting = conn.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.state != "sent"))
        if not waiting:
            break
        time.sleep(0.2)
    engine.dispose()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="nurture-signup-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NURTURE_DATABASE_URL": f"sqlite:///{workdir / 'subscribers.db'}",
           "NURTURE_SECRET_KEY": "bench", "NURTURE_TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
           "NURTURE_OUTBOX_DIR": str(workdir / "outbox"), "NURTURE_PORT": str(port), "NURTURE_BASE_URL": url,
           "NURTURE_SUBSCRIBE_RATE": "1000000/second", "NURTURE_CONFIRMATIONS_PER_DAY": "20",
           "NURTURE_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "nurture", "db", "upgrade"], cwd=workdir, env=env, check=True,
                   capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "nurture", "serve"], cwd=workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(url)
        run = subprocess.run(["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                              "-s", str(ROOT / "bench" / "signup.lua"), url], capture_output=True, text=True,
                             check=True)
        drain = wait_for_confirmations(workdir / "subscribers.db")
    finally:
        server.terminate()
        server.wait(timeout=30)
    values = dict(line.split() for line in run.stdout.splitlines() if line.split()[:1] in (["ACCEPTED"], ["P50_US"],
                                                                                          ["P99_US"]))
    accepted = int(values["ACCEPTED"])
    engine = create_engine(f"sqlite:///{workdir / 'subscribers.db'}")
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(Subscriber))
        ledger = conn.scalar(select(func.count()).select_from(ConsentEvent))
        confirmations = conn.scalar(select(func.count()).select_from(OutboxMessage))
        sent = conn.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "sent"))
    non_2xx = next((line for line in run.stdout.splitlines() if "Non-2xx" in line), "Non-2xx responses: 0")
    print(f"\nsignup load: nurture serve (1 uvicorn worker, SQLite WAL) vs wrk, {args.connections} connections, "
          f"{args.seconds} s, 2 cores shared\n")
    print(f"{'signups/s':>10} | {'p50 ms':>7} | {'p99 ms':>7} | {'accepted':>9} | {'rows':>9} | {'missing':>7} | "
          f"{'confirmations sent':>18}")
    print("-" * 86)
    print(f"{accepted / args.seconds:>10,.0f} | {int(values['P50_US']) / 1000:>7.1f} | "
          f"{int(values['P99_US']) / 1000:>7.1f} | {accepted:>9,} | {rows:>9,} | {max(accepted - rows, 0):>7} | "
          f"{sent:>8,} of {confirmations:,}")
    print(f"\nconsent ledger rows: {ledger:,}; {non_2xx.strip()}; the last confirmation email went "
          f"{drain:.1f} s after the load stopped")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
