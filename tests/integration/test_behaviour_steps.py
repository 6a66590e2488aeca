"""Behaviour-aware steps across a simulated sequence, with real passes on SQLite and PostgreSQL.

Five people confirm at the same moment and receive the shipped sequence (with two links planted
in a copy: the consultation link in email 2, the clinic's site in the invitation, and one more
numbered step on the reminder's day after it), passes every three hours for two weeks, clicks
made through the real /c/ handler as each email arrives:

- ``consult``: clicks the consultation link in email 2 -> no reminder ("clicked the consultation link");
- ``invite``: clicks the clinic's site in the invitation -> no reminder ("clicked a link in consultation-invite");
- ``nothing``: clicks nothing -> the reminder on day 11, and the step after it on day 12;
- ``website``: clicks the site in email 1 only -> the reminder, like ``nothing``;
- ``stopped``: clicks nothing but stops the series after the invitation -> no reminder, no row;
- ``before``: clicks nothing, but agreed to the first wording ("four emails over about a week"),
  which promised no reminder -> no reminder.

A skipped reminder uses up no day: the numbered step after it goes on day 11, the reminder's day.
"""

from __future__ import annotations

import email
import re
import shutil
from datetime import datetime, timedelta, timezone
from email import policy
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from nurture.db import transaction
from nurture.feedback.bounces import outbox_ref
from nurture.feedback.timeline import build_timeline
from nurture.models import ConsentEvent, OutboxMessage
from nurture.people.consent_ledger import CONSENT_WORDINGS
from nurture.people import subscribers
from nurture.runtime import Runtime
from nurture.sending.journey import Planner
from nurture.sending.tracked_links import links_in, resolve
from nurture.sending.transports import MemoryTransport
from nurture.web import create_app

from conftest import TEMPLATES, make_settings
from factories import REQUEST, confirmed

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago, where everyone lives
CHICAGO = ZoneInfo("America/Chicago")
WEBSITE = "https://clinic.example"


@pytest.fixture
def settings(tmp_path, database_url):
    copy = tmp_path / "emails"
    shutil.copytree(TEMPLATES, copy)
    plant(copy / "nurture" / "20-how-it-may-work.html.j2",
          '<p><a href="{{ consultation_url }}">Book a consultation</a></p>')
    plant(copy / "nurture" / "40-consultation-invite.html.j2", '<p><a href="{{ clinic.website_url }}">Our clinic</a></p>')
    plant(copy / "nurture" / "10-welcome-history.html.j2", '<p><a href="{{ clinic.website_url }}">Our clinic</a></p>')
    later = (copy / "nurture" / "20-how-it-may-work.html.j2").read_text(encoding="utf-8")
    (copy / "nurture" / "50-later.html.j2").write_text(
        later.replace("key: how-it-may-work", "key: later").replace("delay_days: 2", "delay_days: 11"), encoding="utf-8")
    return make_settings(tmp_path, database_url, templates_dir=str(copy), website_url=WEBSITE)


def plant(path, paragraph: str) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('{% include "nurture/_whats-next.j2" %}',
                                 paragraph + '\n{% include "nurture/_whats-next.j2" %}', 1), encoding="utf-8")


class Simulation:
    def __init__(self, runtime, transport) -> None:
        self.runtime, self.transport = runtime, transport
        self.now = T0
        self.client = TestClient(create_app(runtime, dispatch=False, clock=lambda: self.now))
        self.tracker = runtime.sender().tracker
        self.seen = 0
        self.received: dict[str, list[tuple[str, datetime]]] = {}

    def arrivals(self):
        """(address, outbox key, HTML) of each message sent since the last call."""
        for _from, to, data in self.transport.sent[self.seen:]:
            message = email.message_from_bytes(data, policy=policy.default)
            with self.runtime.sessions() as session:
                key = session.get(OutboxMessage, outbox_ref(message["Message-ID"])).key
            self.received.setdefault(to, []).append((key, self.now))
            yield to, key, message.get_body(("html",)).get_content()
        self.seen = len(self.transport.sent)

    def click(self, html_part: str, target: str) -> None:
        """Click the tracked link of this message that leads to ``target``, through /c/."""
        for url in links_in(html_part):
            match = re.search(r"/c/([^/?#]+)$", url)
            if match and resolve([target], -1, self.tracker.read_click(match.group(1))[2]):
                answer = self.client.get(f"/c/{match.group(1)}", follow_redirects=False)
                assert answer.headers["location"] == target
                return
        raise AssertionError(f"no tracked link to {target}")


CLICKS = {  # (person, the step whose email they click in) -> where they click
    ("consult@example.com", "how-it-may-work"): "consultation",
    ("invite@example.com", "consultation-invite"): WEBSITE,
    ("website@example.com", "welcome-history"): WEBSITE,
}


def test_conditions_across_a_simulated_sequence(runtime, memory_transport):
    people = ["consult", "invite", "nothing", "website", "stopped", "before"]
    ids = {name: confirmed(runtime.sessions, f"{name}@example.com", T0) for name in people}
    with transaction(runtime.sessions) as session:  # signed up before the wording announced a reminder
        session.execute(update(ConsentEvent).where(ConsentEvent.subscriber_id == ids["before"])
                        .values(wording_version="2026-11-28", wording=CONSENT_WORDINGS["2026-11-28"]))
    sim = Simulation(runtime, memory_transport)
    consultation = runtime.settings.consultation_url
    while sim.now < T0 + timedelta(days=14):
        runtime.sender().run_pass(sim.now)
        sim.now += timedelta(minutes=1)
        for to, key, html_part in sim.arrivals():
            step = key.rsplit(":", 1)[-1]
            target = CLICKS.get((to, step))
            if target:
                sim.click(html_part, consultation if target == "consultation" else target)
            if (to, step) == ("stopped@example.com", "consultation-invite"):
                with transaction(runtime.sessions) as session:
                    subscribers.unsubscribe(session, ids["stopped"], scope="series", now=sim.now, request=REQUEST)
        sim.now += timedelta(hours=3) - timedelta(minutes=1)

    def day_of(address: str, step: str) -> int | None:
        at = next((at for key, at in sim.received.get(address, []) if key == f"seq:nurture:{step}"), None)
        return None if at is None else (at.astimezone(CHICAGO).date() - T0.astimezone(CHICAGO).date()).days

    numbered = {"welcome-history": 0, "how-it-may-work": 2, "risks-side-effects": 5, "consultation-invite": 8}
    for name in people:
        assert {step: day_of(f"{name}@example.com", step) for step in numbered} == numbered, name
    # Those who clicked: no reminder, and the step after it on the reminder's own day (no day used up).
    for name in ("consult", "invite", "before"):
        assert day_of(f"{name}@example.com", "invite-reminder") is None
        assert day_of(f"{name}@example.com", "later") == 11
    for name in ("nothing", "website"):
        assert day_of(f"{name}@example.com", "invite-reminder") == 11
        assert day_of(f"{name}@example.com", "later") == 12
    assert day_of("stopped@example.com", "invite-reminder") is None
    assert day_of("stopped@example.com", "later") is None

    with runtime.sessions() as session:
        rows = {(sid, key): (state.value, reason) for sid, key, state, reason in session.execute(
            select(OutboxMessage.subscriber_id, OutboxMessage.key, OutboxMessage.state, OutboxMessage.last_error)
            .where(OutboxMessage.key == "seq:nurture:invite-reminder"))}
    assert rows == {
        (ids["consult"], "seq:nurture:invite-reminder"): ("suppressed", "skipped: clicked the consultation link"),
        (ids["invite"], "seq:nurture:invite-reminder"): ("suppressed", "skipped: clicked a link in consultation-invite"),
        (ids["nothing"], "seq:nurture:invite-reminder"): ("sent", None),
        (ids["website"], "seq:nurture:invite-reminder"): ("sent", None),
        (ids["before"], "seq:nurture:invite-reminder"): (
            "suppressed", "skipped: the wording they agreed to (2026-11-28) promised no reminder"),
    }

    # explain shows the skipped step with its reason, and no Message-ID for mail never sent.
    settings = runtime.settings
    with runtime.sessions() as session:
        story = build_timeline(session, "consult@example.com", now=sim.now, planner=Planner.from_settings(settings),
                               secret=settings.secret, from_header=settings.mail_from)
    skipped = [e for e in story.entries if e.what == "seq:nurture:invite-reminder · skipped"]
    assert [(e.at.astimezone(CHICAGO).date().day, e.detail) for e in skipped] == [
        (12, "clicked the consultation link")]
    assert story.why_nothing == "finished the sequence; receives the newsletter"
    sim.client.close()


@pytest.fixture
def shipped_runtime(tmp_path, database_url):
    """The shipped templates as they are: the reminder is the last step."""
    (tmp_path / "shipped").mkdir()
    runtime = Runtime(make_settings(tmp_path / "shipped", database_url), transport_override=MemoryTransport())
    yield runtime, runtime.transport_override
    runtime.close()


def test_a_click_after_the_step_was_decided_changes_nothing(shipped_runtime):
    """With the shipped sequence (the reminder last): the reminder went (no click by its day); a
    later click does not unsend it or queue it again; and a skipped reminder is not reconsidered
    when the person stops and resumes the series."""
    runtime, memory_transport = shipped_runtime
    nothing = confirmed(runtime.sessions, "late@example.com", T0)
    clicker = confirmed(runtime.sessions, "early@example.com", T0)
    sim = Simulation(runtime, memory_transport)
    consultation = runtime.settings.consultation_url
    while sim.now < T0 + timedelta(days=14):
        runtime.sender().run_pass(sim.now)
        sim.now += timedelta(minutes=1)
        for to, key, html_part in sim.arrivals():
            if key == "seq:nurture:consultation-invite" and to == "early@example.com":
                sim.click(html_part, consultation)
            if key == "seq:nurture:invite-reminder":
                sim.click(html_part, consultation)  # the reminder worked: a click after it went
        if sim.now > T0 + timedelta(days=12):
            with transaction(runtime.sessions) as session:  # stop and resume: the skip stays decided
                subscribers.unsubscribe(session, clicker, scope="series", now=sim.now, request=REQUEST)
                subscribers.resume(session, clicker, scope="series", now=sim.now, request=REQUEST)
        sim.now += timedelta(hours=3) - timedelta(minutes=1)
    sent = [key for key, _at in sim.received["late@example.com"]]
    assert sent.count("seq:nurture:invite-reminder") == 1
    assert "seq:nurture:invite-reminder" not in [key for key, _at in sim.received["early@example.com"]]
    with runtime.sessions() as session:
        reasons = session.execute(select(OutboxMessage.subscriber_id, OutboxMessage.last_error)
                                  .where(OutboxMessage.key == "seq:nurture:invite-reminder")).all()
    assert sorted(reasons) == sorted([(nothing, None), (clicker, "skipped: clicked the consultation link")])
    sim.client.close()
