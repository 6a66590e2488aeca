"""A small, hand-counted history for the report tests (reports, /admin, the browser dashboard).

Everybody is built through the real subscribe/confirm rules; what happened afterwards (sends,
clicks, opens, bounces, unsubscribes) is written as the sender, tracking and bounce code write it:
one outbox row per message and one event per thing that happened. The expected figures are
written out by hand in EXPECTED_* so a test compares with arithmetic done by a person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from nurture.db import transaction
from nurture.models import Broadcast, Event, OutboxMessage, OutboxState, Status
from nurture.people import subscribers
from nurture.people.validation import Signup

from factories import REQUEST, confirmed

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
SINCE = NOW - timedelta(days=7)
CONSULTATION = "https://clearwater-psychiatry.example/consultation"
STEPS = ("welcome-history", "how-it-may-work", "risks-side-effects", "consultation-invite")
# The funnel lists every step of the shipped sequence, the conditional reminder too (issue 14).
FUNNEL_STEPS = STEPS + ("invite-reminder",)


@dataclass
class Scene:
    ids: dict[str, int] = field(default_factory=dict)
    broadcasts: dict[str, int] = field(default_factory=dict)


def build(sessions, now: datetime = NOW) -> Scene:
    """The history, relative to ``now`` (the default matches the EXPECTED_* figures)."""
    scene = Scene()
    day = timedelta(days=1)
    week_ago = now - timedelta(days=7)

    scene.ids["old"] = confirmed(sessions, "old@example.com", now - 40 * day)
    for name in "abcdfgh":
        scene.ids[name] = confirmed(sessions, f"{name}@example.com", week_ago + timedelta(hours=2 + ord(name) - 97))
    with transaction(sessions) as session:
        scene.ids["e"] = subscribers.subscribe(
            session, Signup("e@example.com", None, "America/Chicago", None, False), now=now - 2 * day,
            request=REQUEST, default_timezone="America/Chicago", confirmations_per_day=3).subscriber_id

    with transaction(sessions) as session:
        i = scene.ids

        def send(who: str, step: str, at: datetime, state: OutboxState = OutboxState.sent, reply="250 2.0.0 Ok"):
            key = step if step.startswith("bcast:") else f"seq:nurture:{step}"
            row = OutboxMessage(subscriber_id=i[who], key=key, template="t", state=state, due_at=at, created_at=at,
                                attempts=1, unknowns=0, sent_at=at if state is OutboxState.sent else None,
                                smtp_reply=reply, last_error=None if state is OutboxState.sent else reply)
            session.add(row)
            session.flush()
            if state in (OutboxState.sent, OutboxState.failed):
                event(who, state.value, at, row.id, reply)
            return row.id

        def event(who: str, kind: str, at: datetime, outbox_id: int | None = None, detail: str | None = None):
            session.add(Event(kind=kind, created_at=at, subscriber_id=i[who], outbox_id=outbox_id, detail=detail))

        def status(who: str, new: Status, at: datetime):
            subscribers.mark_status(session, i[who], new, at)

        def leave(who: str, scope: str, at: datetime):  # writes the "unsubscribed" event itself
            assert subscribers.unsubscribe(session, i[who], scope=scope, now=at, request=REQUEST)

        # The old cohort (signed up 40 days ago): the whole series, and the goal.
        old = now - 40 * day
        old_1 = send("old", "welcome-history", old + timedelta(minutes=1))
        event("old", "clicked", old + timedelta(hours=1), old_1, "https://clearwater-psychiatry.example/history")
        for n, step in enumerate(STEPS[1:], start=1):
            sent = send("old", step, old + n * 3 * day)
        event("old", "clicked", old + 9 * day + timedelta(hours=1), sent, CONSULTATION)
        # The reminder three days later: skipped, as the planner records it (never sent).
        send("old", "invite-reminder", old + 12 * day, OutboxState.suppressed, reply="skipped: clicked the consultation link")

        # The week's cohort.
        t = week_ago + timedelta(hours=10)
        a1 = send("a", "welcome-history", t)
        event("a", "clicked", t + timedelta(minutes=5), a1, "https://clearwater-psychiatry.example/history")
        event("a", "clicked", t + timedelta(minutes=9), a1, "https://clearwater-psychiatry.example/history")
        send("a", "how-it-may-work", t + 1 * day)
        send("a", "risks-side-effects", t + 2 * day)
        a4 = send("a", "consultation-invite", t + 3 * day)
        event("a", "clicked", t + 3 * day + timedelta(minutes=3), a4, CONSULTATION)
        event("a", "clicked", t + 3 * day + timedelta(minutes=4), a4, CONSULTATION + "?utm_source=nurture")
        send("a", "invite-reminder", t + 6 * day, OutboxState.suppressed, reply="skipped: clicked the consultation link")

        send("b", "welcome-history", t)
        b2 = send("b", "how-it-may-work", t + day)
        # Not the goal: a different page that merely starts with the same letters.
        event("b", "clicked", t + day + timedelta(minutes=2), b2, CONSULTATION + "-fees")
        leave("b", "all", t + day + timedelta(minutes=30))
        send("b", "risks-side-effects", t + 2 * day, OutboxState.suppressed, reply=None)

        c1 = send("c", "welcome-history", t)
        event("c", "bounced", t + timedelta(hours=2), c1, "5.1.1 user unknown")
        status("c", Status.bounced, t + timedelta(hours=2))

        send("d", "welcome-history", t, OutboxState.failed, reply="554 5.7.1 rejected by policy")

        send("f", "welcome-history", t)
        send("g", "welcome-history", t)
        leave("g", "series", t + 4 * day)
        # h left before anything was sent to them: credited to no email.
        leave("h", "all", week_ago + timedelta(hours=9, minutes=30))

        # Newsletter issues: one this week (to a, f and old), one a month ago (to old only).
        recent = Broadcast(template="newsletter/2026-12-winter.html.j2", audience="all", status="sent",
                           send_at=now - day, created_at=now - 2 * day, track_opens=True, recipients=3)
        older = Broadcast(template="newsletter/2026-10-autumn.html.j2", audience="all", status="sent",
                          send_at=now - 30 * day, created_at=now - 31 * day, track_opens=False, recipients=1)
        session.add_all([recent, older])
        session.flush()
        scene.broadcasts = {"recent": recent.id, "older": older.id}
        r = f"bcast:{recent.id}"
        r_a = send("a", r, now - day)
        send("f", r, now - day)
        r_old = send("old", r, now - day)
        event("old", "clicked", now - day + timedelta(hours=1), r_old, "https://clearwater-psychiatry.example/news")
        event("a", "opened", now - day + timedelta(hours=2), r_a)
        leave("f", "newsletter", now - day + timedelta(hours=3))
        send("old", f"bcast:{older.id}", now - 30 * day)

        # Waiting in the outbox.
        send("f", "how-it-may-work", now + timedelta(hours=18), OutboxState.queued, reply=None)
        send("a", "bcast:999", now - timedelta(hours=1), OutboxState.retry, reply="451 4.3.0 try again later")
    return scene


# Cohort since SINCE: a b c d f g h confirmed, e pending; "old" is outside.
# Not yet due and stopped, by hand: still in the series are a, d (their welcome failed, the rest
# comes), f (step 2 queued) and old; stopped are b (left everything), c (bounced), g (left the
# series), h (left before anything) and, for the welcome only, d. So for the week's cohort:
# welcome sent 5 (a b c f g), not yet due 0, stopped 2 (d h); step 2 sent 2 (a b), not yet due 2
# (d f), stopped 3 (c g h); steps 3 and 4 sent 1 (a), not yet due 2 (d f), stopped 4 (b c g h).
# Everybody adds old, who was sent every step. Every row adds up to the confirmed count.
# The reminder: a and old clicked the consultation link, so theirs was skipped (stopped, not to
# come); still to come for d and f: sent 0, not yet due 2, stopped 5 (a b c g h), with old 6.
EXPECTED_SINCE = {
    "signups": 8, "confirmed": 7, "goal": 1,
    "steps": {
        "welcome-history": dict(sent=5, not_yet_due=0, stopped=2, clickers=1, bounced=1, unsubscribed=1, goal_clickers=0),
        "how-it-may-work": dict(sent=2, not_yet_due=2, stopped=3, clickers=1, bounced=0, unsubscribed=1, goal_clickers=0),
        "risks-side-effects": dict(sent=1, not_yet_due=2, stopped=4, clickers=0, bounced=0, unsubscribed=0, goal_clickers=0),
        "consultation-invite": dict(sent=1, not_yet_due=2, stopped=4, clickers=1, bounced=0, unsubscribed=0, goal_clickers=1),
        "invite-reminder": dict(sent=0, not_yet_due=2, stopped=5, clickers=0, bounced=0, unsubscribed=0, goal_clickers=0),
    },
    "broadcasts": {"recent": dict(sent=3, clickers=1, openers=1, unsubscribed=1)},
}
EXPECTED_ALL = {
    "signups": 9, "confirmed": 8, "goal": 2,
    "steps": {
        "welcome-history": dict(sent=6, not_yet_due=0, stopped=2, clickers=2, bounced=1, unsubscribed=1, goal_clickers=0),
        "how-it-may-work": dict(sent=3, not_yet_due=2, stopped=3, clickers=1, bounced=0, unsubscribed=1, goal_clickers=0),
        "risks-side-effects": dict(sent=2, not_yet_due=2, stopped=4, clickers=0, bounced=0, unsubscribed=0, goal_clickers=0),
        "consultation-invite": dict(sent=2, not_yet_due=2, stopped=4, clickers=2, bounced=0, unsubscribed=0, goal_clickers=2),
        "invite-reminder": dict(sent=0, not_yet_due=2, stopped=6, clickers=0, bounced=0, unsubscribed=0, goal_clickers=0),
    },
    "broadcasts": {"recent": dict(sent=3, clickers=1, openers=1, unsubscribed=1),
                   "older": dict(sent=1, clickers=0, openers=0, unsubscribed=0)},
}


NAMES = ("maria", "james", "aisha", "tom", "lena", "diego", "priya", "sam", "olga", "kwame", "ruth", "yuki",
         "ben", "fatima", "noah", "ines", "omar", "clara", "ravi", "hana")


def demo(sessions, now: datetime = NOW, days: int = 60, seed: int = 7) -> None:
    """A plausible two months (a few hundred people), for screenshots: weekday rhythm, most confirm,
    fewer open each later email, a few click the consultation link, a few leave or bounce."""
    import random

    from nurture.models import Subscriber
    from nurture.people.address_hashes import tombstone_pepper
    from nurture.people.validation import keyed_email_hash

    with sessions() as session:
        pepper = tombstone_pepper(session)
    rng = random.Random(seed)
    delays = (0, 2, 5, 8)
    people, rows, events = [], [], []
    for d in range(days, -1, -1):
        day = now - timedelta(days=d)
        weekday = day.weekday() < 5
        for n in range(rng.randint(4, 11) if weekday else rng.randint(1, 5)):
            at = day.replace(hour=rng.randint(0, 23), minute=rng.randint(0, 59))
            if at > now:
                continue
            address = f"{rng.choice(NAMES)}.{len(people) + 1}@example.com"
            ok = rng.random() < 0.82
            people.append(dict(email=address, email_hash=keyed_email_hash(address, pepper), first_name=None,
                               timezone=rng.choice(("America/Chicago", "America/New_York", "America/Denver")),
                               status=Status.confirmed if ok else Status.pending, wants_series=True,
                               wants_newsletter=True, sequence="nurture", tags=[], created_at=at, updated_at=at,
                               confirmed_at=at + timedelta(minutes=rng.randint(1, 90)) if ok else None,
                               status_changed_at=at, confirm_round=1))
    with transaction(sessions) as session:
        session.execute(Subscriber.__table__.insert(), people)
        ids = [sid for (sid,) in session.execute(Subscriber.__table__.select().with_only_columns(
            Subscriber.id).order_by(Subscriber.id))]
        issue = Broadcast(template="newsletter/2026-12-winter.html.j2", audience="all", status="sent",
                          send_at=now - timedelta(days=3, hours=6), created_at=now - timedelta(days=5),
                          track_opens=True, recipients=0)
        session.add(issue)
        session.flush()
        outbox_id = 0
        for sid, person in zip(ids, people):
            if person["confirmed_at"] is None:
                continue
            left = False
            for position, (step, delay) in enumerate(zip(STEPS, delays)):
                at = person["confirmed_at"] + timedelta(days=delay)
                if delay:  # in the send window: 09:00-17:00 in Chicago
                    at = at.replace(hour=rng.randint(15, 22), minute=rng.randint(0, 59))
                state = OutboxState.sent if at <= now else OutboxState.queued
                if left or at > now + timedelta(hours=2):  # the planner queues a step when it is due
                    break
                outbox_id += 1
                rows.append(dict(id=outbox_id, subscriber_id=sid, key=f"seq:nurture:{step}", template="t", state=state,
                                 due_at=at, created_at=at, attempts=1 if state is OutboxState.sent else 0, unknowns=0,
                                 sent_at=at if state is OutboxState.sent else None,
                                 smtp_reply="250 2.0.0 Ok: queued" if state is OutboxState.sent else None))
                if state is not OutboxState.sent:
                    break
                events.append(dict(kind="sent", created_at=at, subscriber_id=sid, outbox_id=outbox_id,
                                   detail="250 2.0.0 Ok: queued"))
                if rng.random() < 0.012:
                    events.append(dict(kind="bounced", created_at=at + timedelta(minutes=3), subscriber_id=sid,
                                       outbox_id=outbox_id, detail="5.1.1 The email account does not exist"))
                    break
                if rng.random() < (0.34, 0.27, 0.22, 0.3)[position]:
                    url = CONSULTATION if position == 3 and rng.random() < 0.6 else "https://clearwater-psychiatry.example/learn"
                    events.append(dict(kind="clicked", created_at=at + timedelta(hours=2), subscriber_id=sid,
                                       outbox_id=outbox_id, detail=url))
                if rng.random() < 0.025:
                    events.append(dict(kind="unsubscribed", created_at=at + timedelta(hours=5), subscriber_id=sid,
                                       outbox_id=None, detail="all"))
                    left = True
            if not left and person["created_at"] < issue.send_at and rng.random() < 0.97:
                outbox_id += 1
                rows.append(dict(id=outbox_id, subscriber_id=sid, key=f"bcast:{issue.id}", template=issue.template,
                                 state=OutboxState.sent, due_at=issue.send_at, created_at=issue.send_at, attempts=1,
                                 unknowns=0, sent_at=issue.send_at, smtp_reply="250 2.0.0 Ok: queued"))
                events.append(dict(kind="sent", created_at=issue.send_at, subscriber_id=sid, outbox_id=outbox_id,
                                   detail="250 2.0.0 Ok: queued"))
                if rng.random() < 0.18:
                    events.append(dict(kind="clicked", created_at=issue.send_at + timedelta(hours=3),
                                       subscriber_id=sid, outbox_id=outbox_id, detail=CONSULTATION))
                if rng.random() < 0.45:
                    events.append(dict(kind="opened", created_at=issue.send_at + timedelta(hours=1),
                                       subscriber_id=sid, outbox_id=outbox_id))
        session.execute(OutboxMessage.__table__.insert(), rows)
        session.execute(Event.__table__.insert(), [{"detail": None, **e} for e in events])
        issue.recipients = sum(1 for r in rows if r["key"] == f"bcast:{issue.id}")
        last = max(r["id"] for r in rows)
        failed = next(r for r in reversed(rows) if r["state"] is OutboxState.sent)
        session.execute(Event.__table__.insert(), [dict(kind="failed", created_at=now - timedelta(minutes=20),
                        subscriber_id=failed["subscriber_id"], outbox_id=last,
                        detail="554 5.7.1 Message rejected: policy violation")])
