"""Signup load: `nurture serve` against the floor of its framework, in one run under one wrk load.

    python bench/bench_signup.py [--seconds 15] [--connections 16] [--rounds 2] [--floors async,sync]

Each round runs, one after the other and each for the same time under the same wrk load
(bench/signup.lua: valid JSON signups, a new address each): the floor (bench/signup_floor.py: bare
FastAPI, a pydantic model checked by email-validator, one SQLite WAL insert; ``async`` inserts on
the event loop, ``sync`` in the thread pool as nurture's contract asks), then nurture, then the
next floor, then nurture again; so whatever else loads the machine meanwhile falls on both, and
the ratio of the two is what holds. Every run starts on a fresh database file; `nurture serve`
sends its confirmation emails into a Maildir while it takes the load, for real.

Prints one row per run and a summary per server: signups/s (202s per second of load), p50 and p99
latency, non-2xx answers (and socket errors), the rows found in the database against the signups
accepted (a few more rows than 202s: requests in flight when wrk stopped counting), and for nurture
the time from the end of the load until the last confirmation email was sent. Each run also says
what the machine was doing: CPU cores busy in the server, in wrk and in every other process
(other engineers' test suites), and the load average before and after. Needs wrk (Debian package
`wrk`). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_RATIO, TARGET_P99_MS, TARGET_DRAIN_S = 0.65, 50.0, 2.0


@dataclass
class Run:
    server: str
    accepted: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rows: int = 0
    ledger: int = 0  # nurture: signup rows in the consent ledger with wording and version
    confirmations: int = 0  # nurture: outbox rows
    sent: int = 0
    drain_s: float | None = None  # nurture: load end to the last confirmation sent
    seconds: float = 0.0
    server_cores: float = 0.0
    wrk_cores: float = 0.0
    other_cores: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    @property
    def in_flight(self) -> int:
        return self.rows - self.accepted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def process_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in jiffies."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def start(server: str, workdir: Path, port: int) -> subprocess.Popen:
    url = f"http://127.0.0.1:{port}"
    if server == "nurture":
        env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
        env |= {"NURTURE_DATABASE_URL": f"sqlite:///{workdir / 'subscribers.db'}", "NURTURE_SECRET_KEY": "bench",
                "NURTURE_TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
                "NURTURE_OUTBOX_DIR": str(workdir / "outbox"), "NURTURE_HOST": "127.0.0.1",
                "NURTURE_PORT": str(port), "NURTURE_BASE_URL": url,
                "NURTURE_SUBSCRIBE_RATE": "1000000/second", "NURTURE_LOG_LEVEL": "WARNING"}
        subprocess.run([sys.executable, "-m", "nurture", "db", "upgrade"], cwd=workdir, env=env, check=True,
                       capture_output=True)
        command = [sys.executable, "-m", "nurture", "serve"]
    else:
        env = dict(os.environ)
        command = [sys.executable, str(ROOT / "bench" / "signup_floor.py"), "--port", str(port),
                   "--database", str(workdir / "floor.db"), "--handler", server.removeprefix("floor-")]
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def confirmations_left(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute("SELECT count(*) FROM outbox WHERE state != 'sent'").fetchone()[0]


def measure(server: str, args: argparse.Namespace, tag: str) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"nurture-signup-bench-{server}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run = Run(server, seconds=args.seconds)
    process = start(server, workdir, port)
    try:
        wait_healthy(url, process)
        time.sleep(1)  # let start-up work (imports, the first pass) settle before the clock starts
        run.load_before = os.getloadavg()
        busy0, total0 = machine_ticks()
        server0 = process_ticks(process.pid)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk = subprocess.run(["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "10s",
                              "--latency", "-s", str(ROOT / "bench" / "signup.lua"), url, "--", tag],
                             capture_output=True, text=True, check=True)
        load_end = time.monotonic()
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, total1 = machine_ticks()
        server1 = process_ticks(process.pid)
        run.load_after = os.getloadavg()
        cpus = os.cpu_count() or 1
        elapsed = (total1 - total0) / cpus / TICKS  # seconds of wall time the counters cover
        run.server_cores = (server1 - server0) / TICKS / elapsed
        run.wrk_cores = ((children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)) / elapsed
        run.other_cores = max((busy1 - busy0) / TICKS / elapsed - run.server_cores - run.wrk_cores, 0.0)
        values = dict(line.split() for line in wrk.stdout.splitlines()
                      if line.split()[:1] and line.split()[0].isupper() and len(line.split()) == 2)
        run.accepted = int(values["ACCEPTED"])
        run.non_2xx = int(values["OTHER_STATUS"])
        run.socket_errors = int(values["SOCKET_ERRORS"])
        run.p50_ms, run.p99_ms = int(values["P50_US"]) / 1000, int(values["P99_US"]) / 1000
        if server == "nurture":
            database = workdir / "subscribers.db"
            while confirmations_left(database) and time.monotonic() - load_end < args.drain_timeout:
                time.sleep(0.05)
            run.drain_s = time.monotonic() - load_end
            if confirmations_left(database):
                run.notes.append(f"confirmations still unsent after {args.drain_timeout:.0f} s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if server == "nurture":
        with sqlite3.connect(workdir / "subscribers.db") as connection:
            one = lambda sql: connection.execute(sql).fetchone()[0]  # noqa: E731
            run.rows = one("SELECT count(*) FROM subscribers")
            run.ledger = one("SELECT count(*) FROM consent_events WHERE kind = 'signup' AND wording IS NOT NULL "
                             "AND wording_version IS NOT NULL AND ip IS NOT NULL")
            run.confirmations = one("SELECT count(*) FROM outbox WHERE key = 'sys:confirm:1'")
            run.sent = one("SELECT count(*) FROM outbox WHERE state = 'sent'")
            mail = len(list((workdir / "outbox" / "new").iterdir())) if (workdir / "outbox" / "new").exists() else 0
            if mail != run.sent:
                run.notes.append(f"{mail} files in the Maildir for {run.sent} sent")
    else:
        with sqlite3.connect(workdir / "floor.db") as connection:
            run.rows = connection.execute("SELECT count(*) FROM signups").fetchone()[0]
    if run.rows < run.accepted:
        run.notes.append(f"{run.accepted - run.rows} accepted signups have no row")
    shutil.rmtree(workdir, ignore_errors=True)
    return run


def loads(values: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def print_runs(runs: list[Run]) -> None:
    head = (f"{'#':>2} | {'server':<11} | {'signups/s':>9} | {'p50 ms':>6} | {'p99 ms':>6} | {'non-2xx':>7} | "
            f"{'accepted':>8} | {'rows':>7} | {'last confirmation':>17} | {'CPU: server':>11} | {'wrk':>4} | "
            f"{'others':>6} | load avg before -> after")
    print(head)
    print("-" * len(head))
    for number, run in enumerate(runs, 1):
        drain = f"{run.drain_s:.1f} s after" if run.drain_s is not None else ""
        rows = f"{run.rows:,}" + (f" ({run.ledger:,} ledger, {run.sent:,} sent)" if run.server == "nurture" else "")
        print(f"{number:>2} | {run.server:<11} | {run.rate:>9,.0f} | {run.p50_ms:>6.1f} | {run.p99_ms:>6.1f} | "
              f"{run.non_2xx + run.socket_errors:>7} | {run.accepted:>8,} | {rows:>7} | {drain:>17} | "
              f"{run.server_cores:>11.2f} | {run.wrk_cores:>4.2f} | {run.other_cores:>6.2f} | "
              f"{loads(run.load_before)} -> {loads(run.load_after)}")
        for note in run.notes:
            print(f"     ! {note}")


def summary(runs: list[Run], floors: list[str]) -> None:
    by_server: dict[str, list[Run]] = {}
    for run in runs:
        by_server.setdefault(run.server, []).append(run)
    print(f"\n{'server':<11} | {'runs':>4} | {'signups/s':>9} | {'p50 ms':>6} | {'p99 ms (worst)':>14} | "
          f"{'non-2xx':>7} | {'accepted without a row':>22} | {'last confirmation (worst)':>25}")
    print("-" * 117)
    for server, group in by_server.items():
        drains = [r.drain_s for r in group if r.drain_s is not None]
        print(f"{server:<11} | {len(group):>4} | {statistics.mean(r.rate for r in group):>9,.0f} | "
              f"{statistics.mean(r.p50_ms for r in group):>6.1f} | "
              f"{statistics.mean(r.p99_ms for r in group):>6.1f} ({max(r.p99_ms for r in group):>5.1f}) | "
              f"{sum(r.non_2xx + r.socket_errors for r in group):>7} | "
              f"{sum(max(r.accepted - r.rows, 0) for r in group):>22} | "
              + (f"{statistics.mean(drains):>13.1f} s ({max(drains):.1f} s)" if drains else f"{'':>25}"))
    nurture = by_server.get("nurture", [])
    if not nurture:
        return
    rate = statistics.mean(r.rate for r in nurture)
    print()
    for floor in floors:
        floor_rate = statistics.mean(r.rate for r in by_server[floor])
        ratio = rate / floor_rate
        print(f"nurture / {floor:<11} = {ratio:.2f}  (target >= {TARGET_RATIO:.2f}: "
              f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    worst_p99 = max(r.p99_ms for r in nurture)
    errors = sum(r.non_2xx + r.socket_errors for r in nurture)
    missing = sum(max(r.accepted - r.rows, 0) + max(r.rows - r.ledger, 0) + max(r.rows - r.confirmations, 0)
                  for r in nurture)
    worst_drain = max(r.drain_s or 0.0 for r in nurture)
    unsent = sum(r.rows - r.sent for r in nurture)
    print(f"nurture p99 (worst run)     = {worst_p99:.1f} ms (target <= {TARGET_P99_MS:.0f} ms: "
          f"{'met' if worst_p99 <= TARGET_P99_MS else 'NOT met'})")
    print(f"nurture non-2xx             = {errors} (target 0: {'met' if not errors else 'NOT met'})")
    print(f"accepted without row, ledger row or confirmation = {missing} "
          f"(target 0: {'met' if not missing else 'NOT met'})")
    print(f"last confirmation (worst)   = {worst_drain:.1f} s after the load, {unsent} unsent "
          f"(target <= {TARGET_DRAIN_S:.0f} s: {'met' if worst_drain <= TARGET_DRAIN_S and not unsent else 'NOT met'})")
    mail_rate = statistics.mean(r.sent / (r.seconds + (r.drain_s or 0.0)) for r in nurture)
    print(f"confirmations sent per second, from the start of the load to the last one: {mail_rate:,.0f} "
          f"(against {rate:,.0f} signups/s taken)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="load per run (every run the same)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floors", default="async,sync", help="floor variants, each followed by a nurture run")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    floors = [f"floor-{name.strip()}" for name in args.floors.split(",") if name.strip()]
    order = [server for _ in range(args.rounds) for floor in floors for server in (floor, "nurture")]
    started = datetime.now(timezone.utc)
    load_at_start = os.getloadavg()
    import email_validator
    import fastapi
    import pydantic
    import sqlalchemy
    import uvicorn

    print(f"signup load, {started:%Y-%m-%d %H:%M} UTC, on {platform.node()}: {os.cpu_count()} cores "
          f"({_cpu_model()}), shared with wrk and whatever else runs; load average {loads(load_at_start)}")
    print(f"wrk -t2 -c{args.connections}, {args.seconds} s a run, {len(order)} runs in this order: "
          f"{', '.join(order)}")
    print(f"fastapi {fastapi.__version__}, starlette, pydantic {pydantic.VERSION}, email-validator "
          f"{email_validator.__version__}, uvicorn {uvicorn.__version__} (one worker, {_uvicorn_impl()}), "
          f"SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}\n")
    runs = []
    for number, server in enumerate(order, 1):
        runs.append(measure(server, args, tag=f"r{number}"))
        print(f"  run {number}/{len(order)} {server}: {runs[-1].rate:,.0f}/s", file=sys.stderr)
    print_runs(runs)
    summary(runs, floors)
    print(f"\nload average at the start {loads(load_at_start)}, at the end {loads(os.getloadavg())}; "
          "\"others\" is the CPU (in cores) that processes other than the server and wrk used during the load")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _uvicorn_impl() -> str:
    """What uvicorn's "auto" picks here, for both servers alike."""
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401
        http = "httptools"
    except ImportError:
        http = "h11"
    return f"{loop} loop, {http}"


if __name__ == "__main__":
    main()
