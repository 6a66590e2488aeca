"""The due index: a pass plans only the people whose stored instant has come, and sends exactly
what planning everyone would send.

The reference is the same planner with every stored instant reset before each pass, which is
what every pass did before the index (look at everyone). Two databases receive the same events
(confirmations at random times, newsletters sent and cancelled, a newsletter opt-out, failed
emails, an edit that inserts a step and shortens a delay, a change of the send window, clicks on
the consultation link and on other links, which decide the shipped reminder's conditions), one
planned by the index and one by the reference: after every pass their outboxes must be equal.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import select, update

from nurture.content.sequences import load_newsletters
from nurture.db import transaction
from nurture.feedback.bounces import outbox_ref
from nurture.models import NEVER, UNPLANNED, OutboxMessage, Subscriber
from nurture.people import subscribers
from nurture.runtime import Runtime
from nurture.sending import broadcasts, outbox
from nurture.sending.journey import Planner
from nurture.sending.transports import Reply

from conftest import TEMPLATES, make_settings
from factories import REQUEST, confirmed

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
INVITE, REMINDER = "seq:nurture:consultation-invite", "seq:nurture:invite-reminder"
ZONES = ["America/Chicago", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Pacific/Auckland",
         "Australia/Adelaide", "America/Los_Angeles"]


class Flaky:
    """Refuses (554, not a bounce) every message whose recipient, key and attempt hash to a
    failure, the same way for both databases.

    The outcome is keyed by the message's outbox key (looked up through its Message-ID), not by
    the order of sending: two messages due at the same instant may be claimed in a different
    order in the two worlds, whose row ids differ."""

    def __init__(self, seed: int, sessions) -> None:
        self.seed = seed
        self.sessions = sessions
        self.tries: dict[tuple[str, str], int] = {}

    def _key(self, data: bytes) -> str:
        headers = BytesHeaderParser().parsebytes(data)
        with self.sessions() as session:
            return session.get(OutboxMessage, outbox_ref(headers["Message-ID"])).key

    def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        attempt = (recipient, self._key(data))
        self.tries[attempt] = self.tries.get(attempt, 0) + 1
        if random.Random(f"{self.seed}:{recipient}:{attempt[1]}:{self.tries[attempt]}").random() < 0.15:
            return Reply(554, "5.7.1 refused for policy reasons")
        return Reply(250, "2.0.0 OK")

    def close(self) -> None:
        pass


def edited_templates(tmp_path: Path) -> Path:
    """The shipped templates with a step inserted after the welcome and the risks email sooner."""
    copy = tmp_path / "edited"
    shutil.copytree(TEMPLATES, copy)
    how = (copy / "nurture" / "20-how-it-may-work.html.j2").read_text(encoding="utf-8")
    (copy / "nurture" / "15-a-short-note.html.j2").write_text(
        how.replace("key: how-it-may-work", "key: a-short-note").replace("delay_days: 2", "delay_days: 1"),
        encoding="utf-8")
    risks = copy / "nurture" / "30-risks-side-effects.html.j2"
    risks.write_text(risks.read_text(encoding="utf-8").replace("delay_days: 5", "delay_days: 3"), encoding="utf-8")
    return copy


class World:
    """One database and its sender, fed the same events as its twin."""

    def __init__(self, tmp_path: Path, url: str, name: str, *, reference: bool, seed: int) -> None:
        self.tmp_path = tmp_path / name
        self.tmp_path.mkdir()
        self.url = url
        self.reference = reference
        self.seed = seed
        self.runtime = self._runtime(TEMPLATES, "09:00-17:00")

    def _runtime(self, templates: Path, window: str) -> Runtime:
        runtime = Runtime(make_settings(self.tmp_path, self.url, templates_dir=str(templates), send_window=window))
        runtime.transport_override = Flaky(self.seed, runtime.sessions)
        return runtime

    def configure(self, templates: Path, window: str) -> None:
        transport = self.runtime.transport
        self.runtime.close()
        self.runtime = self._runtime(templates, window)
        transport.sessions = self.runtime.sessions
        self.runtime.transport_override = transport

    def run_pass(self, now: datetime) -> None:
        if self.reference:
            with transaction(self.runtime.sessions) as session:
                session.execute(update(Subscriber).values(next_due_at=UNPLANNED))
        self.runtime.sender().run_pass(now)

    def outbox(self) -> list[tuple]:
        with self.runtime.sessions() as session:
            return session.execute(
                select(OutboxMessage.subscriber_id, OutboxMessage.key, OutboxMessage.due_at, OutboxMessage.state)
                .order_by(OutboxMessage.subscriber_id, OutboxMessage.key)
            ).all()


def simulate(tmp_path: Path, urls: tuple[str, str], seed: int, days: int, people: int, pass_every: timedelta):
    rng = random.Random(seed)
    worlds = [World(tmp_path, urls[0], "indexed", reference=False, seed=seed),
              World(tmp_path, urls[1], "reference", reference=True, seed=seed)]
    edited = edited_templates(tmp_path)
    joins = sorted(T0 + timedelta(minutes=rng.randrange(days * 24 * 60 // 2)) for _ in range(people))
    now, end, checked = T0, T0 + timedelta(days=days), 0
    created: list[datetime] = []  # when each newsletter was created (ids 1, 2, ... in both worlds)
    while now < end:
        for world in worlds:
            for i, at in enumerate(joins):
                if now - pass_every < at <= now:
                    confirmed(world.runtime.sessions, f"p{i}@example.com", at, ZONES[i % len(ZONES)])
        event = Event(random.Random(f"{seed}:{now.isoformat()}"), now, created, pass_every)
        for world in worlds:
            event.apply(world, edited)
        event.done()
        for world in worlds:
            world.run_pass(now)
        indexed, reference = (w.outbox() for w in worlds)
        assert indexed == reference, f"seed {seed}: the outboxes differ after the pass at {now}"
        checked += 1
        now += pass_every
    for world in worlds:
        world.runtime.close()
    reminders = Counter(state.value for _sid, key, _due, state in indexed if key == REMINDER)
    return checked, len(indexed), reminders


class Event:
    """What happens before one pass, decided once and applied to both worlds alike."""

    def __init__(self, rng: random.Random, now: datetime, created: list[datetime], pass_every: timedelta) -> None:
        self.now, self.created = now, created
        roll = rng.random()
        just_created = bool(created) and created[-1] == now - pass_every
        if just_created and roll < 0.4:
            self.kind = "cancel"  # the newsletter created at the last pass, before it all went
        elif just_created and roll < 0.8:
            self.kind = "opt-out"  # someone it is still to reach stops the newsletter, keeps the series
        elif roll < 0.08:
            self.kind = "newsletter"  # to everyone confirmed, in three hours (later today for many)
        elif roll < 0.20:
            self.kind = "opt-out"  # someone with a newsletter queued stops it, keeps the series
        elif 0.50 < roll < 0.53:
            self.kind = "edit"  # marketing inserts a step and shortens a delay in the live sequence
        elif 0.60 < roll < 0.62:
            self.kind = "window"  # the operator moves the send window
        elif 0.25 < roll < 0.50:
            self.kind = "click"  # someone clicks a link in an email they were sent (the reminder's conditions)
        else:
            self.kind = None
        self.pick = rng.random()
        self.where = rng.random()

    def apply(self, world: World, edited: Path) -> None:
        rt, now = world.runtime, self.now
        if self.kind == "newsletter":
            planner = Planner.from_settings(rt.settings)
            newsletter = next(iter(load_newsletters(rt.settings.templates_dir).values()))
            with transaction(rt.sessions) as session:
                broadcasts.create(session, newsletter=newsletter, audience="all", send_at=now + timedelta(hours=3),
                                  now=now, sequence=planner.sequence(), window=planner.window)
        elif self.kind == "cancel":
            with transaction(rt.sessions) as session:
                broadcasts.cancel(session, len(self.created))
        elif self.kind == "opt-out":
            with transaction(rt.sessions) as session:
                ids = session.scalars(select(OutboxMessage.subscriber_id).where(
                    OutboxMessage.key.startswith("bcast:"), OutboxMessage.state == "queued", OutboxMessage.due_at > now
                ).order_by(OutboxMessage.subscriber_id)).all()
                if ids:
                    chosen = ids[int(self.pick * len(ids))]
                    subscribers.unsubscribe(session, chosen, scope="newsletter", now=now, request=REQUEST)
        elif self.kind == "edit":
            world.configure(edited, rt.settings.send_window)
        elif self.kind == "window":
            world.configure(rt.settings.templates_dir, "10:30-18:00")
        elif self.kind == "click":
            self._click(world)

    def _click(self, world: World) -> None:
        """A click on one sent email: the invitation half the time when someone has it, the
        consultation link half the time (any email may carry it), else the clinic's site. The
        same (subscriber, key) in both worlds, whose row ids differ."""
        rt, now = world.runtime, self.now
        with transaction(rt.sessions) as session:
            sent = session.execute(select(OutboxMessage.id, OutboxMessage.subscriber_id, OutboxMessage.key).where(
                OutboxMessage.state == "sent").order_by(OutboxMessage.subscriber_id, OutboxMessage.key)).all()
            invitations = [row for row in sent if row.key == INVITE]
            rows = invitations if invitations and self.where < 0.5 else sent
            if not rows:
                return
            row = rows[int(self.pick * len(rows))]
            url = rt.settings.consultation_url if self.where * 4 % 1 < 0.5 else rt.settings.website_url
            outbox.record_event(session, "clicked", now, subscriber_id=row.subscriber_id, outbox_id=row.id, detail=url)

    def done(self) -> None:
        if self.kind == "newsletter":
            self.created.append(self.now)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_index_plans_exactly_what_planning_everyone_plans(tmp_path, seed):
    from nurture.migrate import upgrade

    urls = tuple(f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("indexed", "reference"))
    for url in urls:
        upgrade(url)
    checked, rows, reminders = simulate(tmp_path, urls, seed, days=16, people=40,
                                        pass_every=timedelta(hours=2, minutes=30))
    assert checked > 100 and rows > 100  # the comparison had something to compare
    assert reminders["sent"] > 0 and reminders["suppressed"] > 0, reminders  # both sides of the conditions


@pytest.mark.postgres
def test_the_index_plans_exactly_what_planning_everyone_plans_on_postgresql(tmp_path, request):
    urls = (request.getfixturevalue("postgres_url"), _second_postgres_schema(request))
    checked, rows, reminders = simulate(tmp_path, urls, 4, days=12, people=25, pass_every=timedelta(hours=3))
    assert checked > 80 and rows > 60
    assert reminders["sent"] + reminders["suppressed"] > 0, reminders  # the conditions were decided


def _second_postgres_schema(request) -> str:
    """A second fresh schema (the postgres_url fixture gives one per test)."""
    import uuid

    from sqlalchemy import create_engine, text

    from nurture.migrate import upgrade

    from conftest import POSTGRES_URL

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    request.addfinalizer(drop)
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    upgrade(url)
    return url


def test_a_confirmation_plans_that_one_person_not_the_list(runtime, memory_transport, monkeypatch):
    for i in range(300):
        confirmed(runtime.sessions, f"r{i}@example.com", T0)
    sender = runtime.sender()
    sender.run_pass(T0)  # everyone's welcome; their next instants are days away
    looked_at: list[int] = []
    original = Planner._plan_page

    def counting(self, session, sequence, people, now):
        looked_at.extend(sid for sid, _, _ in people)
        return original(self, session, sequence, people, now)

    monkeypatch.setattr(Planner, "_plan_page", counting)
    assert sender.run_pass(T0 + timedelta(hours=1)).planned == 0
    assert looked_at == []  # an idle pass looks at nobody
    newcomer = confirmed(runtime.sessions, "new@example.com", T0 + timedelta(hours=2))
    summary = sender.run_pass(T0 + timedelta(hours=2))
    assert looked_at == [newcomer] and summary.planned == 1 and summary.sent == 1


def test_each_stored_instant_is_the_next_steps_time_and_never_after_the_end(runtime):
    from zoneinfo import ZoneInfo

    sid = confirmed(runtime.sessions, "tokyo@example.com", T0, "Asia/Tokyo")
    sender = runtime.sender()
    sender.run_pass(T0)  # the welcome
    with runtime.sessions() as session:
        due = session.get(Subscriber, sid).next_due_at
    local = due.astimezone(ZoneInfo("Asia/Tokyo"))
    confirmed_day = T0.astimezone(ZoneInfo("Asia/Tokyo")).date()
    assert (local.date() - confirmed_day).days == 2 and (local.hour, local.minute) == (9, 0)
    now = T0
    while now < T0 + timedelta(days=12):
        sender.run_pass(now)
        now += timedelta(hours=1)
    with runtime.sessions() as session:
        assert session.get(Subscriber, sid).next_due_at == NEVER


def test_a_failed_welcome_lets_the_next_step_be_planned_afresh(runtime, memory_transport):
    sid = confirmed(runtime.sessions, "a@example.com", T0)
    memory_transport.replies = [Reply(554, "5.7.1 refused")]
    runtime.sender().run_pass(T0)
    with runtime.sessions() as session:
        assert session.get(Subscriber, sid).next_due_at == UNPLANNED


@pytest.mark.parametrize("how", ["opt-out", "cancel"])
def test_a_newsletter_that_no_longer_goes_frees_its_day_for_the_step_it_held_back(runtime, how):
    """The step due at 09:00 waits because a newsletter goes at 11:00 the same day; when the
    person stops the newsletter (or it is cancelled) at 09:30, the step goes at the next pass."""
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    start = datetime(2026, 12, 1, 9, 0, tzinfo=chicago)
    sid = confirmed(runtime.sessions, "reader@example.com", start)
    sender = runtime.sender()
    sender.run_pass(start)  # the welcome
    day2 = start + timedelta(days=2)
    planner = Planner.from_settings(runtime.settings)
    newsletter = next(iter(load_newsletters(runtime.settings.templates_dir).values()))
    with transaction(runtime.sessions) as session:
        b = broadcasts.create(session, newsletter=newsletter, audience="all", send_at=day2 + timedelta(hours=2),
                              now=day2 - timedelta(hours=1), sequence=planner.sequence(), window=planner.window)
        broadcast_id = b.id
    assert sender.run_pass(day2).planned == 0  # held back by the newsletter later today
    with transaction(runtime.sessions) as session:
        if how == "opt-out":
            subscribers.unsubscribe(session, sid, scope="newsletter", now=day2 + timedelta(minutes=30),
                                    request=REQUEST)
        else:
            broadcasts.cancel(session, broadcast_id)
    assert sender.run_pass(day2 + timedelta(hours=1)).planned == 1
