"""/metrics through the real app on SQLite and PostgreSQL: the Prometheus text parsed back and
checked against a database built by hand; its door; and pass records and JSON log lines written
by a real `send-due` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from nurture.db import make_engine, session_factory, transaction
from nurture.models import OutboxMessage, OutboxState, PassRecord, Status
from nurture.runtime import Runtime
from nurture.sending.outbox import Claim, Outcome
from nurture.sending.pass_log import PassRun, write
from nurture.sending.pass_summary import PassSummary
from nurture.sending.transports import MemoryTransport
from nurture.web import create_app

from conftest import SECRET, TEMPLATES, make_settings
from factories import Clock, confirmed, subscriber

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
TOKEN = "scrape-token-0123456789"
PASSWORD = "s3cret pass"


def app_client(tmp_path, database_url, **settings) -> tuple[Runtime, TestClient]:
    runtime = Runtime(make_settings(tmp_path, database_url, **settings), transport_override=MemoryTransport())
    return runtime, TestClient(create_app(runtime, dispatch=False, clock=Clock(NOW)), client=("203.0.113.9", 4321))


@pytest.fixture
def metrics_client(tmp_path, database_url):
    runtime, client = app_client(tmp_path, database_url, metrics_token=TOKEN, admin_password=PASSWORD)
    with client:
        yield runtime, client
    runtime.close()


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def add_outbox(sessions, subscriber_id: int, key: str, state: OutboxState, due_at: datetime) -> None:
    with transaction(sessions) as session:
        session.add(OutboxMessage(subscriber_id=subscriber_id, key=key, template="t.html.j2", state=state,
                                  due_at=due_at, created_at=due_at, attempts=0, unknowns=0))


def outcome(key: str, state: OutboxState, bounced: bool = False) -> Outcome:
    return Outcome(Claim(1, key, "t", 1, 0, False, 1, "a@example.com", None, "UTC"), state, bounced=bounced)


def build_scene(sessions) -> None:
    """Five people, queue rows in each live state, and three passes: an ok one, a stopped one, and
    last the breaker."""
    people = [subscriber(sessions, f"p{i}@example.com", NOW - timedelta(days=3), status=status)
              for i, status in enumerate([Status.confirmed, Status.confirmed, Status.unsubscribed, Status.bounced])]
    with transaction(sessions) as session:  # one still to confirm: no confirmed_at
        from nurture.models import Subscriber
        session.get(Subscriber, people[3]).confirmed_at = None
    pending = subscriber(sessions, "p9@example.com", NOW, status=Status.pending)
    with transaction(sessions) as session:
        from nurture.models import Subscriber
        session.get(Subscriber, pending).confirmed_at = None
    a, b = people[0], people[1]
    add_outbox(sessions, a, "seq:nurture:welcome", OutboxState.queued, NOW - timedelta(minutes=90))  # oldest due
    add_outbox(sessions, b, "seq:nurture:welcome", OutboxState.retry, NOW - timedelta(minutes=30))
    add_outbox(sessions, a, "bcast:1", OutboxState.queued, NOW + timedelta(hours=2))  # not due yet
    add_outbox(sessions, b, "bcast:1", OutboxState.sending, NOW - timedelta(hours=5))  # in flight: not waiting
    add_outbox(sessions, a, "sys:confirm:1", OutboxState.sent, NOW - timedelta(days=3))
    add_outbox(sessions, b, "seq:nurture:risks", OutboxState.unknown, NOW - timedelta(hours=1))

    first = PassSummary(planned=2)
    for o in (outcome("seq:nurture:welcome", OutboxState.sent), outcome("seq:nurture:welcome", OutboxState.sent),
              outcome("sys:confirm:1", OutboxState.sent), outcome("bcast:1", OutboxState.failed, bounced=True),
              outcome("seq:nurture:risks", OutboxState.retry)):
        first.add(o)
    write(sessions, PassRun("first", NOW - timedelta(hours=2), summary=first, outcome="ok"),
          finished_at=NOW - timedelta(hours=2) + timedelta(seconds=3))
    write(sessions, PassRun("second", NOW - timedelta(hours=1), outcome="stopped", reason="mail server unreachable"),
          finished_at=NOW - timedelta(hours=1) + timedelta(seconds=40))
    write(sessions, PassRun("third", NOW - timedelta(minutes=15), outcome="breaker",
                            reason="paused: 3 of 10 messages in this run bounced"),
          finished_at=NOW - timedelta(minutes=15) + timedelta(seconds=0.5))


def test_the_figures_match_a_database_built_by_hand(metrics_client):
    runtime, client = metrics_client
    build_scene(runtime.sessions)
    got = scrape(client)

    assert got["nurture_queue_messages"] == {(("state", "queued"),): 2, (("state", "sending"),): 1,
                                             (("state", "retry"),): 1, (("state", "unknown"),): 1}
    assert got["nurture_oldest_queued_age_seconds"][()] == 90 * 60
    messages = got["nurture_messages_total"]
    assert messages[(("outcome", "sent"), ("stream", "sequence"))] == 2
    assert messages[(("outcome", "retried"), ("stream", "sequence"))] == 1
    assert messages[(("outcome", "sent"), ("stream", "transactional"))] == 1
    assert messages[(("outcome", "failed"), ("stream", "newsletter"))] == 1
    assert messages[(("outcome", "bounced"), ("stream", "newsletter"))] == 1
    assert messages[(("outcome", "sent"), ("stream", "newsletter"))] == 0
    assert sum(messages.values()) == 6
    assert got["nurture_pass_duration_seconds_count"][()] == 3
    assert got["nurture_pass_duration_seconds_sum"][()] == pytest.approx(43.5)
    buckets = {dict(labels)["le"]: value for labels, value in got["nurture_pass_duration_seconds_bucket"].items()}
    assert buckets["1.0"] == 1 and buckets["5.0"] == 2 and buckets["60.0"] == 3 and buckets["+Inf"] == 3
    assert got["nurture_last_successful_pass_timestamp_seconds"][()] == (NOW - timedelta(hours=2, seconds=-3)).timestamp()
    assert got["nurture_last_pass_timestamp_seconds"][()] == (NOW - timedelta(minutes=15, seconds=-0.5)).timestamp()
    assert got["nurture_circuit_breaker_open"] == {
        (("reason", "paused: 3 of 10 messages in this run bounced"),): 1}
    people = got["nurture_subscribers"]
    assert people[(("status", "confirmed"),)] == 2 and people[(("status", "pending"),)] == 1
    assert people[(("status", "unsubscribed"),)] == 1 and people[(("status", "erased"),)] == 0
    assert got["nurture_signups_total"][()] == 5
    assert got["nurture_confirmations_total"][()] == 3


def test_an_empty_database_scrapes_with_zeroes_and_a_closed_breaker(metrics_client):
    _runtime, client = metrics_client
    got = scrape(client)
    assert set(got["nurture_queue_messages"].values()) == {0}
    assert got["nurture_oldest_queued_age_seconds"][()] == 0
    assert got["nurture_circuit_breaker_open"] == {(("reason", ""),): 0}
    assert "nurture_last_pass_timestamp_seconds" not in got
    assert got["nurture_pass_duration_seconds_count"][()] == 0


def test_the_door_token_or_admin_password_else_401(metrics_client):
    _runtime, client = metrics_client
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "nurture_" not in refused.text
    assert "Bearer" in refused.headers["www-authenticate"] and "Basic" in refused.headers["www-authenticate"]
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert client.get("/metrics", auth=("admin", "wrong")).status_code == 401
    assert client.get("/metrics", auth=("root", PASSWORD)).status_code == 401
    basic = client.get("/metrics", auth=("admin", PASSWORD))
    assert basic.status_code == 200 and "nurture_queue_messages" in basic.text
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_wrong_credentials_are_throttled(metrics_client):
    _runtime, client = metrics_client
    answers = [client.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code for _ in range(12)]
    assert answers[:10] == [401] * 10 and answers[10:] == [429, 429]


@pytest.mark.parametrize("settings, opens", [({}, None), ({"metrics_token": TOKEN}, "token"),
                                             ({"admin_password": PASSWORD}, "basic"),
                                             ({"metrics_token": "  "}, None)])
def test_off_without_a_token_or_password_and_each_works_alone(tmp_path, sqlite_url, settings, opens):
    runtime, client = app_client(tmp_path, sqlite_url, **settings)
    with client:
        token = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        basic = client.get("/metrics", auth=("admin", PASSWORD)).status_code
    runtime.close()
    if opens is None:
        assert token == basic == 404
    else:
        assert (token, basic) == ((200, 401) if opens == "token" else (401, 200))


def nurture(workdir, *args, env=None):
    environ = {**os.environ, "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
               "COLUMNS": "200", **(env or {})}
    environ.pop("NURTURE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "nurture", *args], cwd=workdir, env=environ, capture_output=True,
                          text=True, timeout=120)


def test_a_real_send_due_writes_its_pass_record(tmp_path):
    assert nurture(tmp_path, "db", "upgrade").returncode == 0
    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'subscribers.db'}"))
    confirmed(sessions, "ann@example.com", NOW)
    done = nurture(tmp_path, "send-due", "--now", NOW.isoformat())
    assert done.returncode == 0, done.stderr
    with sessions() as session:
        [record] = session.scalars(select(PassRecord)).all()
    assert record.outcome == "ok" and record.planned >= 1
    assert record.counts["sequence"]["sent"] == 1  # the welcome
    assert record.finished_at >= record.started_at > NOW  # the real clock, not --now
    down = nurture(tmp_path, "send-due", "--now", (NOW + timedelta(days=2)).isoformat(),
                   env={"NURTURE_SMTP_URL": "smtp://127.0.0.1:9"})
    assert down.returncode == 1
    with sessions() as session:
        last = session.scalars(select(PassRecord).order_by(PassRecord.id.desc())).first()
    assert last.outcome == "stopped" and "unreachable" in last.reason


def test_json_log_lines_of_a_real_command_hold_no_address_and_no_secret(tmp_path):
    """send-due to a server without SMTPUTF8: the address it cannot take is logged, masked."""
    from smtp_sink import SmtpServer

    assert nurture(tmp_path, "db", "upgrade").returncode == 0
    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'subscribers.db'}"))
    confirmed(sessions, "zoë@bücher.example", NOW)
    with SmtpServer(smtputf8=False) as server:
        done = nurture(tmp_path, "send-due", "--now", NOW.isoformat(),
                       env={"NURTURE_LOG_FORMAT": "json", "NURTURE_LOG_LEVEL": "INFO", "NURTURE_SMTP_URL": server.url,
                            "NURTURE_ADMIN_PASSWORD": "hunter2-password", "NURTURE_METRICS_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "expected the sender's warning"
    parsed = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "event"} <= set(parsed[0])
    [warning] = [p for p in parsed if "SMTPUTF8" in p["event"]]
    assert warning["level"] == "WARNING" and "z***@" in warning["event"] and "pass_id" in warning
    for secret in ("zoë@", "zoë", SECRET, "hunter2", TOKEN):
        assert secret not in done.stderr


def test_serve_logs_json_uvicorn_included_and_answers_metrics(tmp_path):
    """A real `nurture serve` with NURTURE_LOG_FORMAT=json: every line it writes is a JSON object
    (the banner's facts and uvicorn's own lines included), and /metrics answers through uvicorn."""
    import httpx

    from .test_web_server import serve

    with serve(tmp_path, log_format="json", log_level="INFO", metrics_token=TOKEN) as (base, _database):
        answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 200 and "nurture_queue_messages" in answer.text
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
    lines = [line for line in (tmp_path / "serve.log").read_text().splitlines() if line.strip()]
    # Python's own multiprocessing resource tracker may warn as the terminated server exits:
    # not a log line, and not nurture's to format.
    others = [line for line in lines if not line.startswith("{")]
    assert all("resource_tracker" in line or line.startswith("  warnings.warn") for line in others), others
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    loggers = {p["logger"] for p in parsed}
    assert "nurture.serve" in loggers and "uvicorn.error" in loggers, loggers
    assert SECRET not in "\n".join(lines) and TOKEN not in "\n".join(lines)
