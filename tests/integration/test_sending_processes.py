"""A large pass spread over several processes (nurture.sending_processes), on SQLite and PostgreSQL,
against a real SMTP server: each message once, the summary and progress of all children, one
child's fault stops the others with nothing marked sent that was not sent."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from nurture.models import OutboxMessage, OutboxState
from nurture.runtime import Runtime
from nurture.sending.pass_summary import TransportDown
from nurture.sending_processes import SendingPass, shares

from conftest import make_settings
from factories import bulk_confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago, inside the send window


def spread(tmp_path, database_url, smtp_url, count, **overrides):
    settings = make_settings(tmp_path, database_url, smtp_url=smtp_url, smtp_pool_size="4", send_processes="2",
                             **overrides)
    runtime = Runtime(settings)
    bulk_confirmed(runtime.sessions, count, T0 - timedelta(minutes=1))
    return runtime, SendingPass(runtime.sender(), settings, spread_from=1)


def outbox_states(runtime):
    with runtime.sessions() as session:
        return Counter(dict(session.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all()))


def test_each_message_goes_once_and_the_summary_counts_every_child(tmp_path, database_url, smtp_server, caplog):
    count = 240
    runtime, passes = spread(tmp_path, database_url, smtp_server.url, count)
    progressed: list[int] = []
    with caplog.at_level(logging.INFO, logger="nurture.sending_processes"):
        summary = passes.run(T0, progress=progressed.append)
    runtime.close()
    assert "spreading the pass over 2 processes" in caplog.text
    assert (summary.planned, summary.sent, summary.failed) == (count, count, 0)
    assert sum(progressed) == count
    received = Counter(m.rcpt_tos[0] for m in smtp_server.handler.messages)
    assert len(received) == count and set(received.values()) == {1}
    assert outbox_states(runtime) == {OutboxState.sent: count}


def test_a_limit_is_kept_by_all_children_together(tmp_path, database_url, smtp_server):
    runtime, passes = spread(tmp_path, database_url, smtp_server.url, 120)
    summary = passes.run(T0, limit=50)
    runtime.close()
    assert summary.sent == 50 and len(smtp_server.handler.messages) == 50
    assert outbox_states(runtime) == {OutboxState.sent: 50, OutboxState.queued: 70}


def test_an_unreachable_server_stops_every_child_and_nothing_is_marked_sent(tmp_path, database_url):
    runtime, passes = spread(tmp_path, database_url, "smtp://127.0.0.1:9", 120)  # the discard port: refused
    with pytest.raises(TransportDown, match="unreachable"):
        passes.run(T0)
    runtime.close()
    assert outbox_states(runtime) == {OutboxState.queued: 120}  # claims released, none left 'sending'


def test_a_stop_halts_the_children_who_release_what_they_did_not_send(tmp_path, sqlite_url, smtp_server):
    smtp_server.handler.delay = 0.01
    runtime, passes = spread(tmp_path, sqlite_url, smtp_server.url, 400)
    stop = threading.Event()
    summary = passes.run(T0, stop=stop, progress=lambda n: stop.set())  # stop once the first chunk is in
    runtime.close()
    states = outbox_states(runtime)
    assert 0 < summary.sent < 400 and states[OutboxState.sent] == summary.sent
    assert states[OutboxState.queued] == 400 - summary.sent and OutboxState.sending not in states
    assert len(smtp_server.handler.messages) == summary.sent


def test_connections_rate_and_limit_are_divided_so_the_children_keep_one_senders_budget(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url, smtp_pool_size="5", rate_per_second="10", rate_per_hour="3600",
                             send_processes="2")
    parts = shares(settings, 2, limit=101)
    assert [p.smtp_pool_size for p, _ in parts] == [3, 2]
    assert sum(p.rate_per_second for p, _ in parts) == pytest.approx(10)
    assert sum(p.rate_per_hour for p, _ in parts) == 3600
    assert sum(limit for _, limit in parts) == 101
    assert all(p.send_processes == 1 for p, _ in parts)
    # Never more processes than connections: each child needs one.
    assert len(shares(settings.model_copy(update={"smtp_pool_size": 1}), 4, None)) == 1


def test_children_started_before_planning_end_with_it_when_planning_stops_the_pass(tmp_path, sqlite_url,
                                                                                     smtp_server, monkeypatch):
    """The children start while the parent plans; if the pass stops there (the complaint breaker
    opens), they end without sending anything."""
    import multiprocessing

    from nurture.sending.pass_summary import CircuitOpen

    runtime, passes = spread(tmp_path, sqlite_url, smtp_server.url, 50)

    def breaker_opens(now, key_prefix=None):
        assert len(multiprocessing.active_children()) == 2  # already starting
        raise CircuitOpen("paused: 3 spam complaints for 200 emails sent in the last 7 days")
    monkeypatch.setattr(passes.sender, "prepare", breaker_opens)
    with pytest.raises(CircuitOpen, match="spam complaints"):
        passes.run(T0)
    runtime.close()
    assert multiprocessing.active_children() == []
    assert smtp_server.handler.messages == [] and outbox_states(runtime) == {}
