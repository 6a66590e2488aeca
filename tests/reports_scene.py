"""A small, hand-counted history for the report tests (reports, /admin, the browser dashboard).

Everybody is built through the real subscribe/confirm rules; what happened afterwards (sends,
clicks, opens, bounces, unsubscribes) is written as the sender, tracking and bounce code write it:
one outbox row per message and one event per thing that happened. The expected figures are
written out by hand in EXPECTED_* so a test compares with arithmetic done by a person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from factories import REQUEST, confirmed
from nurture import subscribers
from nurture.db import transaction
from nurture.models import Broadcast, Event, OutboxMessage, OutboxState, Status
from nurture.validation import Signup

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
SINCE = NOW - timedelta(days=7)
CONSULTATION = "https://clearwater-psychiatry.example/consultation"
STEPS = ("welcome-history", "how-it-may-work", "risks-side-effects", "consultation-invite")


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
EXPECTED_SINCE = {
    "signups": 8, "confirmed": 7, "goal": 1,
    "steps": {
        "welcome-history": dict(sent=5, clickers=1, bounced=1, unsubscribed=1, goal_clickers=0),
        "how-it-may-work": dict(sent=2, clickers=1, bounced=0, unsubscribed=1, goal_clickers=0),
        "risks-side-effects": dict(sent=1, clickers=0, bounced=0, unsubscribed=0, goal_clickers=0),
        "consultation-invite": dict(sent=1, clickers=1, bounced=0, unsubscribed=0, goal_clickers=1),
    },
    "broadcasts": {"recent": dict(sent=3, clickers=1, openers=1, unsubscribed=1)},
}
EXPECTED_ALL = {
    "signups": 9, "confirmed": 8, "goal": 2,
    "steps": {
        "welcome-history": dict(sent=6, clickers=2, bounced=1, unsubscribed=1, goal_clickers=0),
        "how-it-may-work": dict(sent=3, clickers=1, bounced=0, unsubscribed=1, goal_clickers=0),
        "risks-side-effects": dict(sent=2, clickers=0, bounced=0, unsubscribed=0, goal_clickers=0),
        "consultation-invite": dict(sent=2, clickers=2, bounced=0, unsubscribed=0, goal_clickers=2),
    },
    "broadcasts": {"recent": dict(sent=3, clickers=1, openers=1, unsubscribed=1),
                   "older": dict(sent=1, clickers=0, openers=0, unsubscribed=0)},
}
