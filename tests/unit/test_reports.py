"""Report rules in isolation: rates, the JSON shape, crediting unsubscribes, what counts as the goal.

An in-memory SQLite database built from the models (no migrations, no files): milliseconds a test.
The same figures on both real databases are in tests/integration/test_reports.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from nurture.content.sequences import Sequence, Step
from nurture.feedback import funnel_figures, reports
from nurture.models import Base, Broadcast, Event, OutboxMessage, OutboxState, Status, Subscriber

T = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
URL = "https://clinic.example/consultation"
SEQUENCE = Sequence("nurture", tuple(
    Step("nurture", key, n, n * 2, f"Subject {n}", "", f"nurture/{n}0-{key}.html.j2")
    for n, key in enumerate(("one", "two", "three"))
))


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


class History:
    def __init__(self, session: Session) -> None:
        self.session = session

    def person(self, name: str, at: datetime = T, confirmed: bool = True) -> int:
        row = Subscriber(email=f"{name}@example.com", email_hash=name, timezone="UTC",
                         status=Status.confirmed if confirmed else Status.pending, wants_series=True,
                         wants_newsletter=True, sequence="nurture", tags=[], created_at=at, updated_at=at,
                         confirmed_at=at if confirmed else None, status_changed_at=at, confirm_round=1)
        self.session.add(row)
        self.session.flush()
        return row.id

    def message(self, who: int, key: str, at: datetime, state=OutboxState.sent) -> int:
        row = OutboxMessage(subscriber_id=who, key=key, template="t", state=state, due_at=at, created_at=at,
                            attempts=1, unknowns=0, sent_at=at if state is OutboxState.sent else None)
        self.session.add(row)
        self.session.flush()
        return row.id

    def event(self, kind: str, at: datetime, who: int | None = None, outbox_id: int | None = None,
              detail: str | None = None) -> None:
        self.session.add(Event(kind=kind, created_at=at, subscriber_id=who, outbox_id=outbox_id, detail=detail))
        self.session.flush()


@pytest.fixture
def history(session):
    return History(session)


def run(session, since=None) -> funnel_figures.Funnel:
    return funnel_figures.funnel(session, since=since, sequence=SEQUENCE, consultation_url=URL)


def test_rates_are_none_when_there_is_nothing_to_divide_by():
    step = funnel_figures.StepFigures("one", 0, "S")
    assert step.click_rate is None and step.unsubscribe_rate is None
    funnel = funnel_figures.Funnel(None, "nurture", URL, signups=0, confirmed=0, goal=0)
    assert funnel.confirm_rate is None and funnel.goal_rate is None
    assert funnel_figures.StepFigures("one", 0, "S", sent=4, clickers=1).click_rate == 0.25


def test_to_dict_is_json_with_iso_dates_and_rates():
    b = funnel_figures.BroadcastFigures(7, "newsletter/x.html.j2", "all", "sent", T, 10, True, sent=3, clickers=1)
    funnel = funnel_figures.Funnel(T, "nurture", URL, signups=3, confirmed=2, goal=1,
                            steps=[funnel_figures.StepFigures("one", 0, "S", sent=2, clickers=1)], broadcasts=[b])
    data = json.loads(json.dumps(funnel.to_dict()))
    assert data["since"] == "2026-11-02T15:00:00+00:00"
    assert data["confirm_rate"] == pytest.approx(0.6667) and data["goal_rate"] == 0.5
    assert data["steps"][0] == {"key": "one", "position": 0, "subject": "S", "sent": 2, "clickers": 1,
                                "openers": 0, "unsubscribed": 0, "bounced": 0, "goal_clickers": 0,
                                "not_yet_due": 0, "stopped": 0, "trackable": None, "click_rate": 0.5, "unsubscribe_rate": 0.0}
    assert data["broadcasts"][0]["send_at"] == "2026-11-02T15:00:00+00:00"
    assert data["broadcasts"][0]["click_rate"] == pytest.approx(0.3333)
    assert funnel_figures.Funnel(None, "n", URL, 0, 0, 0).to_dict()["since"] is None


def test_an_unsubscribe_is_credited_to_the_last_marketing_email_sent_before_it(session, history):
    ann, bob, cy = history.person("ann"), history.person("bob"), history.person("cy")
    history.message(ann, "seq:nurture:one", T)
    history.message(ann, "seq:nurture:two", T + timedelta(days=2))
    history.message(ann, "sys:confirm:1", T + timedelta(days=3))  # not marketing: never credited
    history.message(ann, "seq:nurture:three", T + timedelta(days=4), OutboxState.queued)  # never sent
    history.event("unsubscribed", T + timedelta(days=3, hours=1), ann, detail="all")
    history.event("unsubscribed", T + timedelta(days=3, hours=2), ann, detail="all")  # one person, once
    # At the very instant of the send still counts: the email was there when they clicked.
    history.message(bob, "seq:nurture:one", T)
    history.event("unsubscribed", T, bob, detail="series")
    # Nothing sent before: credited to nothing.
    history.event("unsubscribed", T - timedelta(minutes=1), cy, detail="all")
    history.message(cy, "seq:nurture:one", T)
    figures = {s.key: s.unsubscribed for s in run(session).steps}
    assert figures == {"one": 1, "two": 1, "three": 0}


def test_a_broadcast_after_a_step_takes_the_credit(session, history):
    ann = history.person("ann")
    issue = Broadcast(template="newsletter/x.html.j2", audience="all", status="sent", send_at=T,
                      created_at=T, track_opens=False, recipients=1)
    session.add(issue)
    session.flush()
    history.message(ann, "seq:nurture:one", T)
    history.message(ann, f"bcast:{issue.id}", T + timedelta(days=1))
    history.event("unsubscribed", T + timedelta(days=1, hours=1), ann, detail="newsletter")
    result = run(session)
    assert [s.unsubscribed for s in result.steps] == [0, 0, 0]
    assert [(b.id, b.sent, b.unsubscribed) for b in result.broadcasts] == [(issue.id, 1, 1)]


def test_the_goal_is_the_consultation_link_with_or_without_parameters(session, history):
    ann, bob, cy, di = (history.person(n) for n in ("ann", "bob", "cy", "di"))
    clicks = ((ann, URL), (bob, URL + "?utm_source=nurture"), (cy, URL + "#book"),
              (di, URL + "-fees"), (di, "https://clinic.example/consultatio"))
    for n, (who, detail) in enumerate(clicks):
        history.event("clicked", T + timedelta(hours=1), who, history.message(who, f"seq:nurture:x{n}", T), detail)
    # A click recorded with the subscriber only (no message) still reaches the goal.
    eve = history.person("eve")
    history.event("clicked", T, eve, None, URL)
    # An open of the link's address is not a click.
    history.event("opened", T, di, None, URL)
    assert run(session).goal == 4


def test_since_picks_the_cohort_who_signed_up_since(session, history):
    old, new = history.person("old", T - timedelta(days=30)), history.person("new", T)
    history.person("waiting", T + timedelta(hours=1), confirmed=False)
    for who in (old, new):
        row = history.message(who, "seq:nurture:one", T + timedelta(days=1))
        history.event("clicked", T + timedelta(days=1, hours=1), who, row, URL)
        history.event("bounced", T + timedelta(days=1, hours=2), who, row, "550 5.1.1")
    result = run(session, since=T)
    assert (result.signups, result.confirmed, result.goal) == (2, 1, 1)
    one = result.steps[0]
    assert (one.sent, one.clickers, one.bounced, one.goal_clickers) == (1, 1, 1, 1)
    everyone = run(session)
    assert (everyone.signups, everyone.steps[0].sent, everyone.goal) == (3, 2, 2)


def test_steps_removed_from_the_templates_are_left_out_and_order_is_the_sequences(session, history):
    ann = history.person("ann")
    history.message(ann, "seq:nurture:retired", T)
    history.message(ann, "seq:other:one", T)  # another sequence's step with the same key
    result = run(session)
    assert [(s.key, s.position, s.sent) for s in result.steps] == [("one", 0, 0), ("two", 1, 0), ("three", 2, 0)]


def test_queue_counts_and_upcoming_use_the_given_now(session, history):
    ann = history.person("ann")
    history.message(ann, "seq:nurture:one", T - timedelta(minutes=1), OutboxState.queued)
    history.message(ann, "seq:nurture:two", T + timedelta(minutes=1), OutboxState.retry)
    history.message(ann, "seq:nurture:three", T, OutboxState.sending)
    assert reports.queue_counts(session, now=T) == reports.QueueCounts(queued=1, retry=1, overdue=1)
    assert [u.overdue for u in reports.upcoming(session, now=T, limit=5)] == [True, False]
    assert [u.overdue for u in reports.upcoming(session, now=T - timedelta(hours=1), limit=5)] == [False, False]


def test_a_render_error_is_named_relative_to_the_templates_folder():
    reason = "render error: RenderError: /srv/app/templates/emails/nurture/10-welcome.html.j2:10: 'frist_name' is undefined"
    assert reports.where_in_templates(reason, "/srv/app/templates/emails") == \
        "nurture/10-welcome.html.j2:10: 'frist_name' is undefined"
    # Elsewhere (another folder, an error without a type): left as it is, never cut wrongly.
    assert reports.where_in_templates("render error: /other/x.j2:1: bad", "/srv/app/templates/emails") == "/other/x.j2:1: bad"
    assert reports.where_in_templates("render error: KeyError: 'x'", "/srv") == "'x'"
