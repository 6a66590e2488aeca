"""`nurture doctor` against a real DNS server (tests/dns_stub.py), a real SMTP server with AUTH,
and the real databases."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from conftest import SECRET, TEMPLATES, make_settings
from dns_stub import DnsStub, txt
from smtp_sink import SmtpServer, free_port
from nurture.sending.doctor import Level, database_finding, dns_findings, run_checks, smtp_finding
from nurture.sending.mail_dns import DnsLookup

DOMAIN = "clinic.example"
PRODUCTION_SECRET = "x" * 40


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    """(key file, its public key as DNS publishes it)."""
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, base64.b64encode(der).decode()


def good_zone(public_key: str) -> dict:
    return {
        (DOMAIN, "TXT"): ['"v=spf1 ip4:192.0.2.0/24 include:_spf.relay.example -all"', '"site-verification=1"'],
        ("_spf.relay.example", "TXT"): ['"v=spf1 ip4:198.51.100.0/24 -all"'],
        (f"s1._domainkey.{DOMAIN}", "TXT"): [txt(f"v=DKIM1; k=rsa; p={public_key}")],
        (f"_dmarc.{DOMAIN}", "TXT"): ['"v=DMARC1; p=reject; rua=mailto:dmarc@clinic.example"'],
        (DOMAIN, "MX"): ["10 mx1.clinic.example."],
    }


def environment(dkim_key, smtp_url, database_url, **extra) -> dict[str, str]:
    return {"NURTURE_ENV": "production", "NURTURE_BASE_URL": "https://news.clinic.example",
            "NURTURE_SECRET_KEY": PRODUCTION_SECRET, "NURTURE_FROM": f"Care Team <care@{DOMAIN}>",
            "NURTURE_DKIM_KEY_FILE": str(dkim_key[0]), "NURTURE_DKIM_SELECTOR": "s1",
            "NURTURE_SMTP_URL": smtp_url, "NURTURE_DATABASE_URL": database_url, **extra}


def doctor(tmp_path, env, *args):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    environ.update({"NURTURE_TEMPLATES_DIR": str(TEMPLATES), "COLUMNS": "200", **env})
    return subprocess.run([sys.executable, "-m", "nurture", "doctor", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def lines_of(done) -> dict[str, str]:
    """The report's lines by check name: {"SPF clinic.example": "ok ..."}."""
    found = {}
    for line in done.stdout.splitlines()[:-1]:  # the last line counts errors and warnings
        level, _, rest = line.partition(" ")
        name, _, detail = rest.strip().partition(": ")
        found[name] = f"{level} {detail}"
    return found


def test_a_healthy_installation_is_all_ok_and_exits_zero(tmp_path, sqlite_url, dkim_key):
    with DnsStub(good_zone(dkim_key[1])) as dns, SmtpServer(credentials=("relay-user", "pw")) as smtp:
        env = environment(dkim_key, f"smtp://relay-user:pw@127.0.0.1:{smtp.port}", sqlite_url)
        done = doctor(tmp_path, env, "--dns-server", dns.address)
        assert smtp.handler.messages == []  # nothing sent
    assert done.returncode == 0, done.stdout + done.stderr
    report = lines_of(done)
    assert [name for name, line in report.items() if not line.startswith("ok")] == [], done.stdout
    assert done.stdout.splitlines()[-1] == "0 error(s), 0 warning(s)"
    assert "EHLO, AUTH as relay-user; no message sent" in report[f"SMTP 127.0.0.1:{smtp.port}"]
    assert "(1 DNS lookup)" in report[f"SPF {DOMAIN}"]
    assert "matches NURTURE_DKIM_KEY_FILE (2048 bits)" in report[f"DKIM s1._domainkey.{DOMAIN}"]
    assert "p=reject" in report[f"DMARC {DOMAIN}"] and "mx1.clinic.example" in report[f"MX {DOMAIN}"]
    assert "production, base URL https://news.clinic.example, secret key of 40 bytes" in report["environment"]
    assert "pw" not in done.stdout.replace("DNS lookups", "")


def test_broken_records_are_each_one_line_saying_what_to_do(tmp_path, sqlite_url, dkim_key, monkeypatch):
    _, other_key = dkim_key
    zone = {
        (DOMAIN, "TXT"): ['"v=spf1 include:_spf.relay.example ~all"', '"v=spf1 mx -all"'],  # two SPF records
        (f"s1._domainkey.{DOMAIN}", "TXT"): [txt(f"v=DKIM1; p={other_key[:100]}AAAA{other_key[104:]}")],
        (f"_dmarc.{DOMAIN}", "TXT"): ['"v=DMARC1; p=none"'],
        ("bounces.clinic.example", "TXT"): ['"nothing here"'],  # no SPF, no MX, no address
    }
    with DnsStub(zone) as dns:
        settings = make_settings(tmp_path, sqlite_url, env="production", base_url="https://news.clinic.example",
                                 secret_key=PRODUCTION_SECRET, **{"from": f"Care <care@{DOMAIN}>"},
                                 transactional_return_path="b@bounces.clinic.example",
                                 dkim_key_file=str(dkim_key[0]), dkim_selector="s1")
        findings = {f.name: f for f in dns_findings(settings, DnsLookup(("127.0.0.1", dns.port), timeout=2))}
    assert findings[f"SPF {DOMAIN}"].level is Level.error and "2 SPF records" in findings[f"SPF {DOMAIN}"].detail
    assert findings["SPF bounces.clinic.example"].level is Level.error
    assert "no SPF record: publish" in findings["SPF bounces.clinic.example"].detail
    assert findings[f"DKIM s1._domainkey.{DOMAIN}"].level is Level.error
    assert findings[f"DMARC {DOMAIN}"].level is Level.warning and "p=none" in findings[f"DMARC {DOMAIN}"].detail
    assert findings[f"MX {DOMAIN}"].level is Level.error  # no MX, no A
    assert "cannot be delivered" in findings["MX bounces.clinic.example"].detail


def test_the_command_exits_one_on_broken_dns_and_names_the_checks(tmp_path, sqlite_url, dkim_key):
    zone = good_zone(dkim_key[1])
    del zone[(DOMAIN, "TXT")]  # no SPF
    del zone[(DOMAIN, "MX")]  # no MX
    zone[(f"_dmarc.{DOMAIN}", "TXT")] = ['"v=DMARC1; p=none"']
    with DnsStub(zone) as dns, SmtpServer(credentials=("u", "pw")) as smtp:
        done = doctor(tmp_path, environment(dkim_key, f"smtp://u:pw@127.0.0.1:{smtp.port}", sqlite_url),
                      "--dns-server", dns.address)
    assert done.returncode == 1
    report = lines_of(done)
    assert report[f"SPF {DOMAIN}"].startswith("error no SPF record")
    assert report[f"DMARC {DOMAIN}"].startswith("warning policy p=none")
    assert report[f"MX {DOMAIN}"].startswith("error no MX")
    assert report[f"DKIM s1._domainkey.{DOMAIN}"].startswith("ok")
    assert "Traceback" not in done.stderr


def test_smtp_checks(tmp_path, sqlite_url):
    def finding(url):
        return smtp_finding(make_settings(tmp_path, sqlite_url, smtp_url=url, smtp_timeout="5"))

    with SmtpServer(credentials=("u", "right")) as smtp:
        ok = finding(f"smtp://u:right@127.0.0.1:{smtp.port}")
        wrong = finding(f"smtp://u:wrong@127.0.0.1:{smtp.port}")
        starttls = finding(f"smtp://u:right@127.0.0.1:{smtp.port}?starttls=1")
    with SmtpServer() as plain:
        no_auth = finding(f"smtp://u:right@127.0.0.1:{plain.port}")
        anonymous = finding(f"smtp://127.0.0.1:{plain.port}")
        assert plain.handler.messages == []
    refused = finding(f"smtp://127.0.0.1:{free_port()}")
    assert ok.level is Level.ok and "AUTH as u" in ok.detail
    assert wrong.level is Level.error and "AUTH as u refused (535" in wrong.detail and "right" not in wrong.detail
    assert starttls.level is Level.error and starttls.detail.startswith("STARTTLS not offered")
    assert no_auth.level is Level.error and no_auth.detail.startswith("AUTH not offered")
    assert anonymous.level is Level.ok and anonymous.detail == "EHLO; no message sent"
    assert refused.level is Level.error and refused.detail.startswith("connect failed")
    unset = smtp_finding(make_settings(tmp_path, sqlite_url))
    assert unset.level is Level.warning and "Maildir" in unset.detail


def test_database_check_on_both_databases(database_url):
    finding = database_finding(database_url)
    assert finding.level is Level.ok and "schema 0" in finding.detail


@pytest.mark.postgres
def test_database_check_of_an_unreachable_or_unmigrated_postgresql(postgres_url):
    refused = database_finding(f"postgresql+psycopg://nurture:secret@127.0.0.1:{free_port()}/nurture")
    assert refused.level is Level.error and "cannot be reached" in refused.detail and "secret" not in refused.detail
    empty = postgres_url.replace("search_path%3D", "search_path%3Dnone_such_")
    finding = database_finding(empty)
    assert finding.level is Level.error and "run `nurture db upgrade`" in finding.detail


def test_database_check_of_sqlite_creates_nothing(tmp_path):
    finding = database_finding(f"sqlite:///{tmp_path / 'none.db'}")
    assert finding.level is Level.error and "run `nurture db upgrade`" in finding.detail
    assert list(tmp_path.iterdir()) == []


def test_dev_configuration_is_a_warning_and_a_bad_one_an_error(tmp_path, sqlite_url):
    findings = run_checks(make_settings(tmp_path, sqlite_url), network=False)
    environment_line = findings[0]
    assert environment_line.level is Level.warning and "NURTURE_ENV=dev" in environment_line.detail
    assert "must be an https:// URL" in environment_line.detail
    bad = doctor(tmp_path, {"NURTURE_TIMEZONE": "Mars/Olympus", "NURTURE_SECRET_KEY": SECRET}, "--offline")
    assert bad.returncode == 1 and "error   configuration: NURTURE_TIMEZONE" in bad.stdout
    assert "Traceback" not in bad.stderr
    usage = doctor(tmp_path, {"NURTURE_SECRET_KEY": SECRET}, "--dns-server", "127.0.0.1:port")
    assert usage.returncode == 1 and usage.stderr.strip().startswith("error: --dns-server: not a port")


def test_a_silent_dns_server_is_one_error_not_a_wait_per_record(tmp_path, sqlite_url):
    import socket
    import time

    settings = make_settings(tmp_path, sqlite_url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        findings = dns_findings(settings, DnsLookup(silent.getsockname(), timeout=0.5))
        elapsed = time.monotonic() - started
    errors = [f for f in findings if f.level is Level.error]
    assert len(errors) == 1 and "DNS checks stopped" in errors[0].detail
    assert elapsed < 5  # one timeout, not one per record
