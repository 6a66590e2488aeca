"""The studio's journey view against the planner that really queues mail: for one person who
confirms at a given moment, a pass at each instant the view shows queues exactly that step, and a
pass a moment earlier queues nothing. Run on a real SQLite file with the real Planner."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from nurture.content.sequences import Sequence, Step
from nurture.db import transaction
from nurture.models import OutboxMessage
from nurture.people.new_subscribers import add_confirmed
from nurture.people.validation import Signup
from nurture.runtime import Runtime
from nurture.sending.journey import Planner, Window
from nurture.sending.transports import MemoryTransport
from nurture.web.studio_journey import plan_journey

from conftest import make_settings

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
TICK = timedelta(seconds=1)


def steps(*spec: tuple[str, int]) -> Sequence:
    return Sequence("nurture", tuple(Step("nurture", key, i, delay, key, "", f"nurture/{key}.html.j2")
                                     for i, (key, delay) in enumerate(spec)))


class FixedPlanner(Planner):
    """The real planner over a sequence given here instead of read from template files."""

    def __init__(self, sequence: Sequence, window: Window) -> None:
        super().__init__(templates_dir=None, sequence_name=sequence.name, window=window)  # type: ignore[arg-type]
        self._sequence = sequence

    def sequence(self) -> Sequence:
        return self._sequence


@pytest.fixture
def sessions(tmp_path, sqlite_url):
    runtime = Runtime(make_settings(tmp_path, sqlite_url), transport_override=MemoryTransport())
    yield runtime.sessions
    runtime.close()


def queued_by_real_passes(sessions, planner: Planner, confirmed_at: datetime, zone: ZoneInfo, instants):
    """Confirm one person at ``confirmed_at``, then run a pass just before and at each instant;
    what each pass queued (step keys), as [(before, at), ...]."""
    with transaction(sessions) as session:
        [person] = add_confirmed(session, [Signup("p@example.com", None, zone.key, None, False)], now=confirmed_at,
                                 source="test", default_timezone=zone.key)

    def run(now: datetime) -> list[str]:
        with transaction(sessions) as session:
            before = set(session.scalars(select(OutboxMessage.key).where(OutboxMessage.subscriber_id == person)))
            planner(session, now)
            after = session.scalars(select(OutboxMessage.key).where(OutboxMessage.subscriber_id == person))
            return sorted(key.rpartition(":")[2] for key in set(after) - before)

    return [(run(at - TICK), run(at)) for at in instants]


CASES = {
    # Clocks go forward in New York at 02:00 on Sunday 8 March 2026.
    "spring-forward": (steps(("welcome", 0), ("how", 2), ("risks", 5), ("consult", 8)),
                       datetime(2026, 3, 6, 10, 0, tzinfo=NY), NY, Window()),
    # Back in London at 02:00 on Sunday 25 October 2026; a late confirmation, two steps on day 0.
    "fall-back-late-at-night": (steps(("a", 0), ("b", 0), ("c", 1), ("d", 3)),
                                datetime(2026, 10, 23, 22, 30, tzinfo=LONDON), LONDON, Window()),
    # Before the window opens, a first step that waits a day, a window of its own.
    "early-and-narrow-window": (steps(("a", 1), ("b", 1), ("c", 2)),
                                datetime(2026, 6, 1, 6, 0, tzinfo=NY), NY, Window(10 * 60, 12 * 60)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_step_is_queued_by_a_real_pass_exactly_when_the_journey_says(sessions, case):
    sequence, confirmed_local, zone, window = CASES[case]
    confirmed_at = confirmed_local.astimezone(UTC)
    rows = plan_journey(sequence, confirmed_at=confirmed_at, zone=zone, window=window)
    assert [r.step.key for r in rows] == [s.key for s in sequence.steps]
    passes = queued_by_real_passes(sessions, FixedPlanner(sequence, window), confirmed_at, zone,
                                   [r.at.astimezone(UTC) for r in rows])
    assert passes == [([], [r.step.key]) for r in rows]


def test_the_journey_shows_the_clock_change_and_the_pushed_steps():
    sequence, confirmed_local, zone, window = CASES["spring-forward"]
    rows = plan_journey(sequence, confirmed_at=confirmed_local.astimezone(UTC), zone=zone, window=window)
    assert [(r.at.strftime("%m-%d %H:%M %Z"), r.day, r.immediate, r.clocks_changed) for r in rows] == [
        ("03-06 10:00 EST", 0, True, None), ("03-08 09:00 EDT", 2, False, "EST → EDT"),
        ("03-11 09:00 EDT", 5, False, None), ("03-14 09:00 EDT", 8, False, None)]
    sequence, confirmed_local, zone, window = CASES["fall-back-late-at-night"]
    rows = plan_journey(sequence, confirmed_at=confirmed_local.astimezone(UTC), zone=zone, window=window)
    assert [(r.at.strftime("%m-%d %H:%M %Z"), r.immediate, r.pushed, r.clocks_changed) for r in rows] == [
        ("10-23 22:30 BST", True, False, None), ("10-24 09:00 BST", False, True, None),
        ("10-25 09:00 GMT", False, True, "BST → GMT"), ("10-26 09:00 GMT", False, False, None)]


def test_an_empty_sequence_has_no_journey():
    assert plan_journey(Sequence("nurture", ()), confirmed_at=datetime(2026, 6, 1, tzinfo=UTC), zone=NY,
                        window=Window()) == []
