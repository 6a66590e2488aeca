"""deploy/: the systemd units pass `systemd-analyze verify` and its offline security review, the
Caddyfile passes `caddy validate`, and the example env file loads under the production rules and
names every setting the README documents. The files agree with each other: the port the units
listen on is the one Caddy proxies to, and the proxy Caddy is is the one nurture trusts.

Skipped without systemd-analyze or caddy, unless NURTURE_REQUIRE_DEPLOY_TOOLS=1 (CI, where .ci/run
installs them), which fails instead. Not tested here: the units running under a real systemd
(this machine's PID 1 is not systemd) and Caddy obtaining a certificate (no public name)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

from conftest import ROOT
from nurture.config import ConfigError, Settings, load_settings
from .test_server_options import wait_for

DEPLOY = ROOT / "deploy"
UNITS = ("nurture-web.service", "nurture-scheduler@.service", "nurture.service")
EXEC = "/opt/nurture/.venv/bin/nurture"
# systemd-analyze security: 0 is locked down, 10 wide open; nurture's units score 1.3 ("OK").
MOST_EXPOSURE = 2.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed"
        if os.environ.get("NURTURE_REQUIRE_DEPLOY_TOOLS") == "1":
            pytest.fail(f"{reason}, and NURTURE_REQUIRE_DEPLOY_TOOLS=1 requires it (.ci/run installs it)")
        pytest.skip(f"{reason} (set NURTURE_REQUIRE_DEPLOY_TOOLS=1 to fail instead)")
    return found


def _runnable_copy(unit: str, folder: Path) -> Path:
    """The unit with ExecStart pointing at a stub (verify insists the program exists), named as
    systemd would load it: a template as its instance 1."""
    stub = folder / "nurture"
    if not stub.exists():
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    text = (DEPLOY / unit).read_text()
    assert EXEC in text
    copy = folder / unit.replace("@.", "@1.")
    copy.write_text(text.replace(EXEC, str(stub)))
    return copy


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_passes_systemd_analyze_verify(unit, tmp_path):
    tool = _tool("systemd-analyze")
    done = subprocess.run([tool, "verify", "--man=no", str(_runnable_copy(unit, tmp_path))],
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 even for an unknown key or a bad value ("ignoring"): any message is a failure.
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr + done.stdout


def test_verify_would_catch_a_misspelt_directive(tmp_path):
    """The check above means something: a typo in a hardening line is reported."""
    tool = _tool("systemd-analyze")
    copy = _runnable_copy("nurture-web.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = subprocess.run([tool, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'ProtectSytem'" in done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_is_hardened(unit, tmp_path):
    tool = _tool("systemd-analyze")
    done = subprocess.run([tool, "security", "--offline=true", "--man=no", f"--threshold={int(MOST_EXPOSURE * 10)}",
                           str(_runnable_copy(unit, tmp_path))], capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert level, done.stdout + done.stderr
    assert float(level.group(1)) <= MOST_EXPOSURE and done.returncode == 0, done.stdout
    settings = _directives(unit)
    for key, value in {"User": "nurture", "ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                       "Restart": "on-failure", "EnvironmentFile": "/etc/nurture/nurture.env",
                       "KillSignal": "SIGTERM", "StateDirectory": "nurture"}.items():
        assert settings.get(key) == [value], f"{unit}: {key}"


def test_every_unit_carries_the_same_hardening_block():
    blocks = {unit: (DEPLOY / unit).read_text().split("# Hardening", 1)[1].split("[Install]")[0] for unit in UNITS}
    assert len(set(blocks.values())) == 1, "the hardening blocks differ: change them together"


def test_the_scheduler_gets_time_to_finish_the_message_in_flight():
    """A graceful stop may wait out a slow relay and write the outcomes of delivered mail for up to a
    lease (NURTURE_LEASE_SECONDS, 300 s by default); systemd's default 90 s would SIGKILL it first."""
    lease = Settings.model_fields["lease_seconds"].default
    for unit in ("nurture-scheduler@.service", "nurture.service"):
        minutes = re.fullmatch(r"(\d+)min", _directives(unit)["TimeoutStopSec"][0])
        assert minutes and int(minutes.group(1)) * 60 > lease, unit
        assert _directives(unit)["KillMode"] == ["mixed"]  # children are stopped by their parent


def test_the_web_units_listen_on_loopback_where_caddy_proxies_to(tmp_path):
    tool = _tool("caddy")
    upstreams = _caddy_json(tool)["upstreams"]
    for unit in ("nurture-web.service", "nurture.service"):
        command = _directives(unit)["ExecStart"][0].split()
        host, port = command[command.index("--host") + 1], command[command.index("--port") + 1]
        assert host == "127.0.0.1" and upstreams == [f"{host}:{port}"], unit
    env = _example_env()
    assert upstreams == [f"{env['NURTURE_HOST']}:{env['NURTURE_PORT']}"]


# ------------------------------------------------------------------------------------------ Caddy

def _caddy(tool: str, *args: str) -> subprocess.CompletedProcess:
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_DATA_HOME": str(home / "caddy-data"),
           "XDG_CONFIG_HOME": str(home / "caddy-config")}
    return subprocess.run([tool, *args, "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
                          capture_output=True, text=True, timeout=60, env=env)


def _caddy_json(tool: str) -> dict:
    """What the Caddyfile means, from `caddy adapt`: the upstreams and the paths answered 404."""
    done = _caddy(tool, "adapt")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    found = {"upstreams": [], "not_found": [], "hosts": []}

    def walk(node):
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                found["upstreams"] += [u["dial"] for u in node["upstreams"]]
            for match in node.get("match", []):
                found["hosts"] += match.get("host", [])
                if any(h.get("handler") == "static_response" and h.get("status_code") == 404
                       for h in node.get("handle", [])):
                    found["not_found"] += match.get("path", [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def test_the_caddyfile_passes_caddy_validate():
    tool = _tool("caddy")
    done = _caddy(tool, "validate")
    assert done.returncode == 0 and "Valid configuration" in done.stdout + done.stderr, done.stderr
    assert "not formatted" not in done.stderr  # `caddy fmt --overwrite deploy/Caddyfile` fixes it


def test_the_caddyfile_serves_the_base_url_and_keeps_the_studio_out():
    tool = _tool("caddy")
    meaning = _caddy_json(tool)
    assert meaning["hosts"] == ["signup.clinic.example"]
    assert _example_env()["NURTURE_BASE_URL"] == "https://signup.clinic.example"
    assert {"/studio", "/studio/*"} <= set(meaning["not_found"])


# ------------------------------------------------------------------------------- the example env file

LINE = re.compile(r"NURTURE_[A-Z0-9_]+=[^\"'\\$`#]*")


def _example_env() -> dict[str, str]:
    return {k: v for k, v in dotenv_values(DEPLOY / "nurture.env").items() if v is not None}


def test_the_env_file_reads_the_same_to_systemd_and_to_python_dotenv():
    """systemd's EnvironmentFile= and python-dotenv (the .env nurture reads) differ on quotes,
    backslashes, $ and a # after a value; lines with none of them mean the same to both."""
    ours = {}
    for number, line in enumerate((DEPLOY / "nurture.env").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        assert LINE.fullmatch(line), f"nurture.env:{number}: {line!r}"
        key, value = line.split("=", 1)
        ours[key] = value.strip()
    assert ours == _example_env()


def _filled() -> dict[str, str]:
    return {k: v.replace("REPLACE_ME", secrets.token_urlsafe(32)) for k, v in _example_env().items()}


def test_the_example_env_file_loads_under_the_production_rules_once_filled_in():
    settings = load_settings(_filled(), env_file=None)
    assert settings.env == "production" and not settings.is_dev
    assert settings.trusted_proxies == ("127.0.0.1",)
    assert settings.base_url.startswith("https://") and settings.smtp_url.startswith("smtp://")
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.templates_dir.is_absolute()  # the services run in /var/lib/nurture


def test_the_example_env_file_as_shipped_is_refused():
    """Its placeholders are not a key anyone should sign with."""
    with pytest.raises(ConfigError, match="NURTURE_SECRET_KEY"):
        load_settings(_example_env(), env_file=None)


def _documented() -> set[str]:
    """The variables in the README's Configuration table (the first column of its rows)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {name for row in table.splitlines() if row.startswith("| `NURTURE_")
            for name in re.findall(r"`(NURTURE_[A-Z0-9_]+)`", row.split("|")[1])}


def test_every_documented_setting_is_in_the_example_env_file():
    named = set(re.findall(r"^(?:# )?(NURTURE_[A-Z0-9_]+)=", (DEPLOY / "nurture.env").read_text(), re.MULTILINE))
    documented = _documented()
    assert len(documented) > 40  # the table was found
    assert documented - named == set(), "add these to deploy/nurture.env (commented out if optional)"


def test_every_setting_in_the_example_env_file_is_one_nurture_reads():
    known = {"NURTURE_" + name.upper() for name in Settings.model_fields} | {"NURTURE_FROM"}
    named = set(re.findall(r"^(?:# )?(NURTURE_[A-Z0-9_]+)=", (DEPLOY / "nurture.env").read_text(), re.MULTILINE))
    assert named - known == set()


# ------------------------------------------------------------------- Caddy in front of nurture serve

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_through_the_caddyfile_a_client_cannot_name_itself_with_x_forwarded_for(tmp_path):
    """The shipped Caddyfile, served over plain HTTP on a free port (no certificate here), in front
    of `nurture serve` with the example's NURTURE_TRUSTED_PROXIES: a made-up X-Forwarded-For does
    not reach the consent ledger or escape the signup limit, and /studio is answered by Caddy."""
    import sqlite3
    import sys

    import httpx

    from conftest import SECRET, TEMPLATES

    tool = _tool("caddy")
    app_port, proxy_port = _free_port(), _free_port()
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    caddyfile = caddyfile.replace("{\n", "{\n\tadmin off\n", 1)  # no admin API on :2019 beside other tests
    caddyfile = caddyfile.replace("signup.clinic.example {", f"http://127.0.0.1:{proxy_port} {{")
    caddyfile = caddyfile.replace("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{app_port}")
    (tmp_path / "Caddyfile").write_text(caddyfile)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    database = tmp_path / "subscribers.db"
    env |= {"NURTURE_DATABASE_URL": f"sqlite:///{database}", "NURTURE_SECRET_KEY": SECRET,
            "NURTURE_TEMPLATES_DIR": str(TEMPLATES), "NURTURE_OUTBOX_DIR": str(tmp_path / "outbox"),
            "NURTURE_LOG_LEVEL": "WARNING", "NURTURE_SUBSCRIBE_RATE": "2/minute",
            "NURTURE_TRUSTED_PROXIES": _example_env()["NURTURE_TRUSTED_PROXIES"],
            "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "conf")}
    logs = tmp_path / "app.log", tmp_path / "caddy.log"
    with logs[0].open("wb") as app_log, logs[1].open("wb") as caddy_log:
        app = subprocess.Popen([sys.executable, "-m", "nurture", "serve", "--host", "127.0.0.1", "--port", str(app_port)],
                               cwd=tmp_path, env=env, stdout=app_log, stderr=subprocess.STDOUT)
        caddy = subprocess.Popen([tool, "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                                 cwd=tmp_path, env=env, stdout=caddy_log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{app_port}/healthz", app, logs[0])
        base = f"http://127.0.0.1:{proxy_port}"
        page = wait_for(f"{base}/", caddy, logs[1])
        assert page.status_code == 200 and "<form" in page.text
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        assert httpx.get(f"{base}/studio", timeout=10).status_code == 404
        codes = [httpx.post(f"{base}/subscribe", json={"email": f"spoof{i}@example.com", "consent": True},
                            headers={"x-forwarded-for": f"198.51.100.{i}"}, timeout=30).status_code
                 for i in range(1, 4)]
    finally:
        for process in (caddy, app):
            process.terminate()
            process.wait(timeout=30)
    assert codes == [202, 202, 429]  # a new made-up address per request does not escape the limit
    with sqlite3.connect(database) as connection:
        ips = [ip for (ip,) in connection.execute("SELECT ip FROM consent_events ORDER BY id")]
    assert ips == ["127.0.0.1", "127.0.0.1"]  # what Caddy saw, not what the client claimed
