"""Sending throughput: `nurture send-due` end to end against the transport limit and the naive way.

    python bench/bench_send.py [--sizes 10000,100000] [--naive 1000] [--connections 4]

Seeds N confirmed subscribers due for the same step in a fresh SQLite file, then times, in one run
and against one aiosmtpd sink running in its own process:
  send-due   the real command (a subprocess), end to end, with its peak memory;
  limit      pre-built message bytes pushed over the same number of connections (the transport limit);
  naive      premailer + a new MIME message + a new SMTP connection + a commit, per email.
It also counts the SQL statements per claimed batch at two sizes (they must not grow with N).
Prints a table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from premailer import Premailer  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from nurture.config import load_settings  # noqa: E402
from nurture.db import make_engine, session_factory  # noqa: E402
from nurture.migrate import upgrade  # noqa: E402
from nurture.runtime import Runtime  # noqa: E402

from factories import bulk_confirmed  # noqa: E402

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago, inside the send window
SECRET = "bench-secret"
TEMPLATES = ROOT / "templates" / "emails"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py"), str(self.port)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        return int(out.strip().splitlines()[-1])


def environ(db: Path, port: int, connections: int) -> dict[str, str]:
    return {"NURTURE_DATABASE_URL": f"sqlite:///{db}", "NURTURE_SMTP_URL": f"smtp://127.0.0.1:{port}",
            "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
            "NURTURE_SMTP_POOL_SIZE": str(connections)}


def seeded(workdir: Path, n: int, name: str) -> Path:
    db = workdir / f"{name}.db"
    upgrade(f"sqlite:///{db}")
    bulk_confirmed(session_factory(make_engine(f"sqlite:///{db}")), n, T0 - timedelta(minutes=1))
    return db


def run_send_due(workdir: Path, db: Path, port: int, connections: int) -> tuple[float, float, str]:
    """Seconds, peak RSS in MiB, and the command's summary line."""
    env = {**os.environ, **environ(db, port, connections)}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "nurture", "send-due", "--now", T0.isoformat()], cwd=workdir,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The child's own high-water mark (VmHWM), read until it exits. getrusage(RUSAGE_CHILDREN)
    # would count the pages it shared with this (large) parent between fork and exec.
    peak_kib = 0
    while process.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(process.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"send-due failed: {err}")
    return seconds, peak_kib / 1024, out.strip()


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def prebuilt_messages(db: Path, port: int, n: int) -> list[tuple[str, bytes]]:
    """The real bytes of n messages, built by the real sender code but not sent."""
    rt = Runtime(load_settings(environ(db, port, 1)))
    sender = rt.sender()
    from nurture.db import transaction
    from nurture.sending import outbox

    with transaction(rt.sessions) as session:
        sender.store.planner(session, T0)
        claims, _ = outbox.claim_batch(session, worker="bench", now=T0, real_now=T0, limit=n)
        session.rollback()
    messages = [(c.email, sender.build(c, T0)) for c in claims]
    rt.close()
    return messages


def push_limit(messages: list[tuple[str, bytes]], port: int, connections: int) -> float:
    """Seconds to push pre-built bytes over `connections` reused connections."""
    shares = [messages[i::connections] for i in range(connections)]

    def push(share):
        conn = smtplib.SMTP("127.0.0.1", port)
        for recipient, data in share:
            conn.sendmail("care@clinic.example", [recipient], data)
        conn.quit()

    threads = [threading.Thread(target=push, args=(share,)) for share in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def naive(db: Path, port: int, n: int) -> float:
    """Messages per second the naive way: premailer, new MIME, new connection and a commit per email."""
    rt = Runtime(load_settings(environ(db, port, 1)))
    renderer = rt.renderer
    template = "nurture/10-welcome-history.html.j2"
    engine = make_engine(f"sqlite:///{db}")
    start = time.perf_counter()
    for i in range(n):
        recipient = renderer.sample_recipient() | {"first_name": f"N{i}"}
        html = Premailer(renderer.render_jinja(template, recipient), allow_network=False,
                         disable_validation=True, cssutils_logging_level="CRITICAL").transform()
        message = EmailMessage(policy=SMTP)
        message["From"], message["To"], message["Subject"] = "care@clinic.example", f"r{i}@example.com", "Welcome"
        message.set_content("text", cte="quoted-printable")
        message.add_alternative(html, subtype="html", cte="quoted-printable")
        conn = smtplib.SMTP("127.0.0.1", port)
        conn.sendmail("care@clinic.example", [f"r{i}@example.com"], message.as_bytes())
        conn.quit()
        with engine.begin() as c:
            c.execute(text("UPDATE outbox SET attempts = attempts WHERE id = :i"), {"i": i})
    seconds = time.perf_counter() - start
    engine.dispose()
    rt.close()
    return n / seconds


def statements_per_batch(workdir: Path, n: int, port: int) -> float:
    """SQL statements executed per claimed batch by an in-process sending pass."""
    db = seeded(workdir, n, f"count{n}")
    rt = Runtime(load_settings(environ(db, port, 4)))
    count = [0]
    event.listen(rt.engine, "before_cursor_execute", lambda *a, **k: count.__setitem__(0, count[0] + 1))
    sender = rt.sender()
    summary = sender.run_pass(T0)
    rt.close()
    batches = -(-summary.sent // sender.settings.batch_size)
    return count[0] / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--naive", type=int, default=1000, help="emails sent the naive way (a rate is taken)")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sink = Sink()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        naive_db = seeded(workdir, args.naive, "naive")
        naive_rate = naive(naive_db, sink.port, args.naive)
        for n in sizes:
            db = seeded(workdir, n, f"send{n}")
            messages = prebuilt_messages(seeded(workdir, n, f"limit{n}"), sink.port, n)
            limit_seconds = push_limit(messages, sink.port, args.connections)
            del messages
            seconds, peak, summary = run_send_due(workdir, db, sink.port, args.connections)
            rows.append((n, n / seconds, n / limit_seconds, peak, summary))
        per_batch = [(n, statements_per_batch(workdir, n, sink.port)) for n in (2000, 10000)]
    received = sink.stop()

    print(f"\nsend-due into an aiosmtpd sink in another process, {args.connections} connections, SQLite\n")
    print(f"{'N':>8} | {'send-due msg/s':>14} | {'limit msg/s':>11} | {'% of limit':>10} | {'naive msg/s':>11} | "
          f"{'x naive':>7} | {'peak MiB':>8}")
    print("-" * 89)
    for n, rate, limit, peak, _ in rows:
        print(f"{n:>8} | {rate:>14,.0f} | {limit:>11,.0f} | {rate / limit:>10.0%} | {naive_rate:>11,.0f} | "
              f"{rate / naive_rate:>7.1f} | {peak:>8.0f}")
    if len(rows) >= 2:
        print(f"\npeak memory at {rows[-1][0]:,} / at {rows[0][0]:,}: {rows[-1][3] / rows[0][3]:.2f}x (target <= 1.5x)")
    for n, stmts in per_batch:
        print(f"SQL statements per batch of 200 at N={n:,}: {stmts:.1f}")
    for n, *_rest, summary in rows:
        print(f"N={n:,}: {summary}")
    print(f"sink received {received:,} messages in all")


if __name__ == "__main__":
    main()
