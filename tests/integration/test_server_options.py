"""`nurture serve`, `run` and `studio` with --host and --port, as real processes: the options win over
NURTURE_HOST/NURTURE_PORT, a bad value or a port in use is one line and a non-zero exit before
anything has started (no database created), and the banner says when links would miss the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import SECRET, TEMPLATES
from .test_scheduler_process import assert_stopped_mid_pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    return env | {"NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
                  "NURTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'subscribers.db'}",
                  "NURTURE_OUTBOX_DIR": str(tmp_path / "outbox"), "NURTURE_LOG_LEVEL": "WARNING",
                  "COLUMNS": "200", **{f"NURTURE_{k.upper()}": v for k, v in settings.items()}}


def nurture(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nurture", *args], cwd=tmp_path, env=environment(tmp_path, **settings),
                          capture_output=True, text=True, timeout=60)


def one_line_error(done: subprocess.CompletedProcess, code: int) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0].removeprefix("error: ")


def start(tmp_path: Path, *args: str, **settings: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{args[0]}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "nurture", *args], cwd=tmp_path,
                                   env=environment(tmp_path, **settings), stdout=out, stderr=subprocess.STDOUT)
    return process, log


def wait_for(url: str, process: subprocess.Popen, log: Path) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within 30 s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


# ------------------------------------------------------------------------------------ they listen

@pytest.mark.parametrize("command", ["serve", "run"])
def test_the_port_option_wins_over_nurture_port_and_the_banner_names_the_base_url_it_misses(tmp_path, command):
    port, setting = free_port(), free_port()
    process, log = start(tmp_path, command, "--host", "127.0.0.1", "--port", str(port), port=str(setting),
                         base_url=f"http://127.0.0.1:{setting}")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/healthz", process, log).status_code == 200
        assert refused(setting)
    finally:
        assert stop(process) == 0
    banner = log.read_text()
    assert f"Open      http://127.0.0.1:{port}" in banner
    assert f"emails link to http://127.0.0.1:{setting}, not to port {port}:" in banner
    assert f"set NURTURE_BASE_URL=http://127.0.0.1:{port}" in banner


def test_without_options_serve_listens_where_the_settings_say_and_the_banner_has_no_warning(tmp_path):
    port = free_port()
    process, log = start(tmp_path, "serve", port=str(port), base_url=f"http://127.0.0.1:{port}")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/healthz", process, log).status_code == 200
    finally:
        assert stop(process) == 0
    assert f"Open      http://127.0.0.1:{port}" in log.read_text() and "emails link to" not in log.read_text()


def test_the_studio_takes_host_and_port(tmp_path):
    port = free_port()
    process, log = start(tmp_path, "studio", "--host", "localhost", "--port", str(port))
    try:
        assert wait_for(f"http://localhost:{port}/", process, log).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert f"studio on http://localhost:{port}" in log.read_text()


# ----------------------------------------------------------------------------- one line, exit code

@pytest.mark.parametrize("command", ["serve", "run", "studio"])
@pytest.mark.parametrize("port", ["0", "70000", "abc"])
def test_a_bad_port_is_one_line(tmp_path, command, port):
    assert one_line_error(nurture(tmp_path, command, "--port", port), 2) == \
        f"--port: must be a number from 1 to 65535, not {port!r}"
    assert not (tmp_path / "subscribers.db").exists()


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_host_this_machine_does_not_have_is_one_line_before_anything_starts(tmp_path, command):
    line = one_line_error(nurture(tmp_path, command, "--host", "192.0.2.1"), 1)
    assert line.startswith("cannot listen on 192.0.2.1:8000: this machine has no such address")
    assert not (tmp_path / "subscribers.db").exists()  # bound first: nothing was migrated


@pytest.mark.parametrize("command", ["serve", "run", "studio"])
def test_a_port_in_use_is_one_line(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(nurture(tmp_path, command, "--port", str(port)), 1)
    assert line.startswith(f"cannot listen on 127.0.0.1:{port}: the port is in use")
    assert not (tmp_path / "subscribers.db").exists()


def test_a_bad_nurture_port_setting_is_one_line(tmp_path):
    assert one_line_error(nurture(tmp_path, "serve", port="70000"), 2).startswith("NURTURE_PORT:")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7"])
def test_the_studio_refuses_a_host_off_this_machine(tmp_path, host):
    line = one_line_error(nurture(tmp_path, "studio", "--host", host), 2)
    assert line == (f"--host: the studio has no login, so it listens on this machine only (127.0.0.1, localhost, "
                    f"::1), not on {host}")


# ------------------------------------------------------------------------------- systemd's stop

def test_run_stopped_by_sigterm_finishes_the_message_in_flight_and_releases_the_rest(tmp_path, database_url,
                                                                                     smtp_server):
    """As `nurture scheduler` does (test_scheduler_process.py): uvicorn re-raises the SIGTERM it
    handled, which must not end `nurture run` before its scheduler has stopped cleanly."""
    from datetime import datetime, timedelta, timezone

    from factories import bulk_confirmed
    from nurture.db import make_engine, session_factory
    from nurture.migrate import upgrade

    upgrade(database_url)
    sessions = session_factory(make_engine(database_url))
    bulk_confirmed(sessions, 300, datetime.now(timezone.utc) - timedelta(minutes=1))
    smtp_server.handler.delay = 0.01
    port = free_port()
    process, log = start(tmp_path, "run", "--port", str(port), database_url=database_url, smtp_url=smtp_server.url,
                         smtp_pool_size="2", log_level="INFO")
    deadline = time.monotonic() + 60
    while len(smtp_server.handler.messages) < 40 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert stop(process) == 0, log.read_text()
    assert "stopping (signal 15): finishing the message in flight" in log.read_text()
    assert_stopped_mid_pass(sessions, smtp_server)
