"""Report figures against a hand-counted history, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from nurture.content.sequences import load_sequences
from nurture.feedback import funnel_figures, reports
from nurture.models import Event, OutboxMessage, Subscriber

import reports_scene as scene_module
from factories import confirmed
from reports_scene import CONSULTATION, EXPECTED_ALL, EXPECTED_SINCE, FUNNEL_STEPS, NOW, SINCE


@pytest.fixture
def sequence(runtime):
    return load_sequences(runtime.settings.templates_dir)["nurture"]


@pytest.fixture
def scene(runtime):
    return scene_module.build(runtime.sessions)


def check(result: funnel_figures.Funnel, expected: dict, scene) -> None:
    assert (result.signups, result.confirmed, result.goal) == (
        expected["signups"], expected["confirmed"], expected["goal"])
    assert [s.key for s in result.steps] == list(FUNNEL_STEPS)  # sequence order, every step even at zero
    for step in result.steps:
        got = dict(sent=step.sent, not_yet_due=step.not_yet_due, stopped=step.stopped, clickers=step.clickers,
                   bounced=step.bounced, unsubscribed=step.unsubscribed, goal_clickers=step.goal_clickers)
        assert got == expected["steps"][step.key], step.key
        assert step.sent + step.not_yet_due + step.stopped == result.confirmed, step.key
    by_id = {b.id: b for b in result.broadcasts}
    assert set(by_id) == {scene.broadcasts[name] for name in expected["broadcasts"]}
    for name, figures in expected["broadcasts"].items():
        b = by_id[scene.broadcasts[name]]
        assert dict(sent=b.sent, clickers=b.clickers, openers=b.openers, unsubscribed=b.unsubscribed) == figures


@pytest.mark.parametrize("since, expected", [(SINCE, EXPECTED_SINCE), (None, EXPECTED_ALL)], ids=["week", "all"])
def test_funnel_matches_the_hand_counted_history(runtime, sequence, scene, since, expected):
    with runtime.sessions() as session:
        result = funnel_figures.funnel(session, since=since, sequence=sequence, consultation_url=CONSULTATION)
    check(result, expected, scene)
    assert result.since == since


def test_rates_are_of_the_right_whole(runtime, sequence, scene):
    with runtime.sessions() as session:
        result = funnel_figures.funnel(session, since=SINCE, sequence=sequence, consultation_url=CONSULTATION)
    assert result.confirm_rate == pytest.approx(7 / 8)
    assert result.goal_rate == pytest.approx(1 / 7)
    first = result.steps[0]
    assert first.click_rate == pytest.approx(1 / 5) and first.unsubscribe_rate == pytest.approx(1 / 5)
    data = result.to_dict()
    assert data["since"] == SINCE.isoformat()
    assert data["steps"][0]["click_rate"] == 0.2
    assert data["broadcasts"][0]["send_at"] == (NOW - timedelta(days=1)).isoformat()


def test_funnel_agrees_with_plain_sql_counts(runtime, sequence, scene):
    """The same figures counted the obvious way, one question at a time."""
    with runtime.sessions() as session:
        result = funnel_figures.funnel(session, since=None, sequence=sequence, consultation_url=CONSULTATION)
        assert result.signups == session.scalar(select(func.count()).select_from(Subscriber))
        assert result.confirmed == session.scalar(select(func.count(Subscriber.confirmed_at)))
        for step in result.steps:
            key = f"seq:nurture:{step.key}"
            assert step.sent == session.scalar(select(func.count()).where(
                OutboxMessage.key == key, OutboxMessage.sent_at.is_not(None)))
            assert step.clickers == session.scalar(
                select(func.count(func.distinct(OutboxMessage.subscriber_id)))
                .join(Event, Event.outbox_id == OutboxMessage.id)
                .where(OutboxMessage.key == key, Event.kind == "clicked"))


def test_the_whole_funnel_takes_a_handful_of_queries(runtime, sequence, scene):
    statements = []

    def seen(_conn, _cursor, statement, *_rest):
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", seen)
    try:
        with runtime.sessions() as session:
            funnel_figures.funnel(session, since=SINCE, sequence=sequence, consultation_url=CONSULTATION)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", seen)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 6, selects


def test_an_empty_database_gives_zeros_not_errors(runtime, sequence):
    with runtime.sessions() as session:
        result = funnel_figures.funnel(session, since=SINCE, sequence=sequence, consultation_url=CONSULTATION)
        assert (result.signups, result.confirmed, result.goal, result.broadcasts) == (0, 0, 0, [])
        assert [s.sent for s in result.steps] == [0, 0, 0, 0, 0]
        assert result.confirm_rate is None and result.steps[0].click_rate is None
        assert reports.recent_deliveries(session, 10) == []
        assert reports.upcoming(session, now=NOW, limit=10) == []
        days = reports.signups_per_day(session, days=30, now=NOW)
    assert len(days) == 30 and {n for _, n in days} == {0}


def test_signups_per_day_are_utc_days_zero_filled(runtime):
    today = NOW.date()
    # 23:59:59 UTC is still the same day; 00:00 the next one.
    late = NOW.replace(hour=23, minute=59, second=59) - timedelta(days=1)
    confirmed(runtime.sessions, "late@example.com", late)
    confirmed(runtime.sessions, "early@example.com", late + timedelta(seconds=1))
    confirmed(runtime.sessions, "also@example.com", NOW - timedelta(minutes=5))
    confirmed(runtime.sessions, "long-ago@example.com", NOW - timedelta(days=30))  # just outside 30 days
    with runtime.sessions() as session:
        days = reports.signups_per_day(session, days=30, now=NOW)
    assert days[0][0] == today - timedelta(days=29) and days[-1][0] == today
    assert all(isinstance(d, date) for d, _ in days)
    counts = dict(days)
    assert counts[today - timedelta(days=1)] == 1 and counts[today] == 2
    assert sum(counts.values()) == 3


def test_recent_deliveries_and_the_queue(runtime, scene):
    with runtime.sessions() as session:
        recent = reports.recent_deliveries(session, 50)
        waiting = reports.upcoming(session, now=NOW, limit=10)
        counts = reports.queue_counts(session, now=NOW)
        sent_events = session.scalar(select(func.count()).where(Event.kind.in_(("sent", "failed", "bounced"))))
    assert len(recent) == sent_events
    assert [r.at for r in recent] == sorted((r.at for r in recent), reverse=True)
    failed = next(r for r in recent if r.kind == "failed")
    assert (failed.email, failed.key, failed.reply) == (
        "d@example.com", "seq:nurture:welcome-history", "554 5.7.1 rejected by policy")
    bounced = next(r for r in recent if r.kind == "bounced")
    assert (bounced.email, bounced.reply) == ("c@example.com", "5.1.1 user unknown")
    with runtime.sessions() as session:
        assert len(reports.recent_deliveries(session, 3)) == 3

    # The confirmation emails the factories queued were never sent: they wait too.
    assert [(u.key, u.state, u.overdue) for u in waiting if not u.key.startswith("sys:")] == [
        ("bcast:999", "retry", True), ("seq:nurture:how-it-may-work", "queued", False)]
    assert [u.due_at for u in waiting] == sorted(u.due_at for u in waiting)
    assert counts.retry == 1 and counts.queued == len(waiting) - 1


def test_signups_per_day_are_the_clinics_local_days(runtime):
    """NOW is 09:00 in Chicago (15:00 UTC). 05:59 UTC is still yesterday evening there (23:59 CST),
    06:00 UTC is today's midnight: the day boundary is the clinic's, not UTC's."""
    today = datetime(2026, 11, 20).date()
    confirmed(runtime.sessions, "evening@example.com", NOW.replace(hour=5, minute=59))
    confirmed(runtime.sessions, "midnight@example.com", NOW.replace(hour=6, minute=0))
    confirmed(runtime.sessions, "now@example.com", NOW - timedelta(minutes=1))
    with runtime.sessions() as session:
        days = dict(reports.signups_per_day(session, days=30, now=NOW, zone="America/Chicago"))
        utc_days = dict(reports.signups_per_day(session, days=30, now=NOW))
    assert days[today - timedelta(days=1)] == 1 and days[today] == 2
    assert utc_days[today] == 3  # the same signups by UTC days: all on the 20th
